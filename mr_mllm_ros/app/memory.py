"""`mr-mllm memory ask|list`: question a scene memory (a memory_node's database, or the
memory.db a replay wrote) without ROS. Facts come from the store; `--json` prints them
with the evidence."""

from __future__ import annotations

import dataclasses
import json

from ..core.config import load_config
from ..core.memory import SceneMemory, fmt_time, resolve_url


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest='memory_command', required=True, metavar='ask|list')
    for name, help_text in (('ask', 'answer a question from the memory, with evidence'),
                            ('list', 'what the memory holds: classes, tracks, cameras')):
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.add_argument('--db', metavar='FILE|URL',
                       help='SQLite file or postgresql:// URL (default: memory.url of the '
                            'config)')
        s.add_argument('--config', help='config YAML merged over the packaged defaults')
        s.add_argument('--json', action='store_true', help='machine-readable output')
        if name == 'ask':
            s.add_argument('question', help='e.g. "when did you last see a tie?"')
            s.add_argument('--camera', default='', help='only this camera namespace')


def _open(args) -> SceneMemory:
    config = load_config(args.config) if args.config else load_config()
    url = args.db or resolve_url(config.memory.url)
    memory = SceneMemory(url, create=False, embeddings=config.memory.embeddings)
    return memory


def run(args) -> int:
    memory = _open(args)
    try:
        if args.memory_command == 'ask':
            a = memory.ask(args.question, args.camera)
            if args.json:
                print(json.dumps(dataclasses.asdict(a), indent=1))
            else:
                print(f'[{a.kind}] {a.answer}')
                for e in a.evidence:
                    box = ', '.join(f'{v:.0f}' for v in e.box)
                    thumb = f'  thumbnail {e.thumbnail}' if e.thumbnail else ''
                    place = '' if e.position is None else '  (' + ', '.join(
                        f'{c:.2f}' for c in e.position) + f') m in {e.position_frame}'
                    print(f'  {fmt_time(e.stamp_ns)}  {e.camera}  track {e.track_id}  '
                          f'{e.class_name} {e.score:.2f}  [{box}]{place}{thumb}')
            return 0 if a.success else 1
        s = memory.summary()
        if args.json:
            print(json.dumps(s, indent=1))
            return 0
        print(f'{s["url"]}: {s["observations"]} observations, {s["descriptions"]} '
              f'descriptions, {s["alerts"]} alerts, {s["bytes"] / 1e6:.1f} MB')
        for c in s['cameras']:
            print(f'  camera {c["camera"] or "(none)"}: watched {fmt_time(c["from_ns"])} to '
                  f'{fmt_time(c["to_ns"])}, {c["frames"]} frames')
        for c in s['classes']:
            print(f'  {c["class"]}: {c["tracks"]} tracks, {c["observations"]} observations, '
                  f'{fmt_time(c["first_ns"])} to {fmt_time(c["last_ns"])}')
        return 0
    finally:
        memory.close()
