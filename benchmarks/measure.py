"""What the benchmarks here do alike: a command line with --json, time a call (after one
warm-up call) and write their numbers as JSON. Imported by the scripts beside it (a
script's own folder is on sys.path when it runs)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def arguments(doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first line as the description and
    --json FILE (for write_json); the script adds its own options."""
    parser = argparse.ArgumentParser(description=doc.split('\n')[0])
    parser.add_argument('--json', metavar='FILE', help='also write the numbers to FILE')
    return parser


def call_times_ms(fn, runs: int) -> list[float]:
    """Milliseconds of `runs` calls of fn(), after one untimed warm-up call (model and
    cache loading belong to start-up, not to the per-call cost)."""
    fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def write_json(path: str | None, result) -> None:
    """The numbers to `path` (folders made); nothing when no path was given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1, default=str))
