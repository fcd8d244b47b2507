"""`mr-mllm train-fusion`: train the shared-query fusion adapter (LLM and detector frozen),
or write its training data.

    mr-mllm train-fusion --data DATA.jsonl --out DIR [--config F] [--eval-data H.jsonl]
                         [--resume DIR/checkpoint-000100] [--train-config T.yaml] [--steps N ...]
    mr-mllm train-fusion --make-toy N --out DIR [--seed S]              # synthetic scenes
    mr-mllm train-fusion --from-coco-captions captions.json --images DIR --out DIR
                         [--instances instances.json] [--limit N]
    mr-mllm train-fusion --from-refcoco refs.json --instances instances.json --images DIR
                         --out DIR [--split train] [--limit N]

The adapter is written to --out (adapter.safetensors + adapter.json, checkpoints,
metrics.jsonl); point `fusion.adapter_path` at that folder. The MLLM is the one the
config names (mllm.backend transformers_llm or transformers_vlm); records without
detections are run through the configured detector first. Training settings
(core.fusion.fusion_config.TrainConfig) are the packaged config/fusion.yaml (`train:`), changed by
--train-config (YAML/JSON, only what differs) and the flags below.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from ..core.config import load_config
from ..core.errors import ConfigError

log = logging.getLogger(__name__)

#: flag -> TrainConfig field for the flags that override training settings
_FLAGS = {'steps': int, 'lr': float, 'scenes_per_step': int, 'questions_per_scene': int,
          'grad_accum': int, 'warmup_steps': int, 'eval_every': int, 'eval_scenes': int,
          'save_every': int, 'seed': int, 'amp': str, 'prompt_template': str}


def add_arguments(p) -> None:
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument('--data', metavar='JSONL', help='training data (see core/fusion/data.py)')
    mode.add_argument('--make-toy', type=int, metavar='N',
                      help='write N synthetic coloured-shape scenes to --out instead')
    mode.add_argument('--from-coco-captions', metavar='JSON',
                      help='convert COCO captions (captions_*.json) to --out/data.jsonl')
    mode.add_argument('--from-refcoco', metavar='JSON',
                      help='convert RefCOCO-style refs (refs(unc).p saved as JSON) to '
                           '--out/data.jsonl')
    p.add_argument('--out', required=True, help='adapter folder (training) or data folder')
    p.add_argument('--config', help='config YAML merged over the packaged defaults (mllm.*, '
                                    'detector.*)')
    p.add_argument('--eval-data', metavar='JSONL', help='held-out data (default: a slice of '
                                                        '--data)')
    p.add_argument('--resume', metavar='CHECKPOINT', help='continue from a checkpoint folder')
    p.add_argument('--train-config', metavar='YAML',
                   help='TrainConfig fields to change (YAML or JSON; defaults: config/fusion.yaml)')
    for flag, tp in _FLAGS.items():
        p.add_argument('--' + flag.replace('_', '-'), type=tp, default=None,
                       help=f'TrainConfig.{flag}')
    p.add_argument('--num-queries', type=int, default=None, help='K soft tokens (adapter)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    p.add_argument('--seed-data', type=int, default=0, help='--make-toy: random seed')
    p.add_argument('--images', help='converters: the folder of the COCO images')
    p.add_argument('--instances', help='converters: COCO instances_*.json (boxes)')
    p.add_argument('--split', help='--from-refcoco: only this split (train, val, testA, ...)')
    p.add_argument('--limit', type=int, default=None, help='converters: at most N records')


def train_config_from(args):
    from ..core.fusion.train import TrainConfig
    data: dict = {}
    if args.train_config:
        try:
            data = yaml.safe_load(Path(args.train_config).read_text(encoding='utf-8')) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f'cannot read --train-config {args.train_config}: {e}') from e
        if not isinstance(data, dict):
            raise ConfigError(f'--train-config {args.train_config} must be a mapping')
    for flag in _FLAGS:
        value = getattr(args, flag)
        if value is not None:
            data[flag] = value
    if args.num_queries is not None:
        data['adapter'] = dict(data.get('adapter') or {}, num_queries=args.num_queries)
    return TrainConfig.from_dict(data)


def _convert(args) -> int:
    from ..core.fusion import data as fusion_data
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.make_toy is not None:
        scenes = fusion_data.toy_scenes(args.make_toy, args.seed_data)
        path = fusion_data.write_jsonl(scenes, out)
        print(f'{len(scenes)} toy scenes -> {path}')
        return 0
    if not args.images:
        raise ConfigError('converters need --images (the folder of the COCO images)')
    if args.from_coco_captions:
        n = fusion_data.convert_coco_captions(args.from_coco_captions, args.images,
                                              out / 'data.jsonl', args.instances,
                                              limit=args.limit)
    else:
        if not args.instances:
            raise ConfigError('--from-refcoco needs --instances (COCO instances with the boxes)')
        n = fusion_data.convert_refcoco(args.from_refcoco, args.instances, args.images,
                                        out / 'data.jsonl', split=args.split, limit=args.limit)
    print(f'{n} records -> {out / "data.jsonl"}')
    return 0


def run(args) -> int:
    if args.data is None:
        return _convert(args)
    from ..core.fusion import data as fusion_data
    from ..core.fusion.train import Trainer
    config = load_config(args.config) if args.config else load_config()
    train_config = train_config_from(args)
    scenes = fusion_data.read_jsonl(args.data)
    eval_scenes = fusion_data.read_jsonl(args.eval_data) if args.eval_data else None
    missing = [s for s in scenes + (eval_scenes or []) if s.detections is None]
    if missing:
        from ..core.detection import create_detector
        detector = create_detector(config)
        try:
            log.info('running %s on %d images without detections', detector.name, len(missing))
            fusion_data.fill_detections(missing, detector)
        finally:
            detector.close()
    trainer = Trainer(config, train_config)
    print(f'training a {trainer.adapter_config.num_queries}-query adapter '
          f'({trainer.adapter_config.num_soft_tokens} soft tokens) for '
          f'{trainer.backend.name} on {len(scenes)} scenes -> {args.out}', flush=True)
    result = trainer.run(scenes, args.out, eval_scenes, resume=args.resume,
                         progress=not args.no_progress)
    summary = {'adapter': str(Path(args.out)), 'steps': result.steps,
               'first_loss': result.losses[0] if result.losses else None,
               'final_loss': result.losses[-1] if result.losses else None,
               'seconds': round(result.seconds, 1),
               'seconds_per_step': round(result.seconds_per_step, 3),
               'parameters': result.parameters, 'eval': result.eval[-1] if result.eval else None}
    print(json.dumps(summary, indent=1))
    print(f'use it: fusion.adapter_path: {Path(args.out).resolve()}')
    return 0
