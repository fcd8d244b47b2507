"""`mr-mllm models prepare|list`: the offline default weights in the models folder."""

from __future__ import annotations

from ..core.assets import model_files as models
from ..core.config import load_config, models_dir


def add_arguments(p) -> None:
    p.add_argument('action', choices=('prepare', 'list'))
    p.add_argument('names', nargs='*', help='only these models (default: all)')
    p.add_argument('--config', help='config YAML (for models_dir)')


def run(args) -> int:
    target = models_dir(load_config(args.config) if args.config else None)
    if args.action == 'prepare':
        for name, paths in models.prepare_all(target, args.names or None).items():
            print(f'{name}: ' + ', '.join(str(p) for p in paths))
        return 0
    for name, spec in models.MODELS.items():
        print(f'{name:24s} {spec.description}\n{"":24s} licence: {spec.licence}')
    print(f'models folder: {target}')
    return 0
