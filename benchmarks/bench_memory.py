"""Scene memory costs on this machine: insert rate, query p95 per question kind at
10^4, 10^5 and 10^6 observations, disk bytes per observation.

    bash scripts/with_env.sh python benchmarks/bench_memory.py [--sizes 10000 100000 1000000]
        [--queries 40] [--postgres URL | --postgres-temp] [--json F]

Synthetic scene at 30 fps on 4 cameras, 8 objects per frame (20 classes, tracks of ~60
observations), one description per 300 frames. Insert rate: records through the
MemoryWriter thread (batch 500, what memory_node does), start to last commit. The larger
stores are then filled with direct batched inserts (same table, same indexes) to save
time. Queries: the memory's own code path (SceneMemory.query) on random classes, cameras
and windows; sentence embeddings off (the SQL cost; one all-MiniLM-L6-v2 question
embedding costs extra, printed once). Nothing asserts on time.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))  # helpers
from measure import arguments, write_json  # noqa: E402

from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()

from mr_mllm_ros.core.detection.labels import COCO_CLASSES  # noqa: E402
from mr_mllm_ros.core.memory import DescriptionRecord, FrameSeen, Observation, Query, SceneMemory  # noqa: E402
from mr_mllm_ros.core.memory.store import Database  # noqa: E402
from mr_mllm_ros.core.memory.writer import MemoryWriter  # noqa: E402

CAMERAS = ('front', 'rear', 'left', 'right')
CLASSES = COCO_CLASSES[:20]
PER_FRAME = 8
FPS = 30
T0 = 1_700_000_000 * 1_000_000_000
FRAME_NS = 1_000_000_000 // FPS


def scene(n_obs: int, seed: int = 0):
    """Records in time order: FrameSeen + PER_FRAME observations per camera frame."""
    rng = random.Random(seed)
    frames = n_obs // (PER_FRAME * len(CAMERAS)) + 1
    tracks = {c: [(k, CLASSES[rng.randrange(len(CLASSES))], rng.randint(30, 90))
                  for k in range(1, PER_FRAME + 1)] for c in CAMERAS}
    next_id = {c: PER_FRAME + 1 for c in CAMERAS}
    made = 0
    for f in range(frames):
        stamp = T0 + f * FRAME_NS
        for c in CAMERAS:
            yield FrameSeen(stamp, c)
            live = []
            for tid, cls, left in tracks[c]:
                if left <= 0:  # the object leaves, another arrives
                    tid, cls, left = next_id[c], CLASSES[rng.randrange(len(CLASSES))], \
                        rng.randint(30, 90)
                    next_id[c] += 1
                x = rng.uniform(0, 560)
                y = rng.uniform(0, 400)
                if made < n_obs:
                    yield Observation(stamp, c, tid, cls, rng.uniform(0.3, 0.95),
                                      (x, y, x + 80, y + 80), image_w=640, image_h=480)
                    made += 1
                live.append((tid, cls, left - 1))
            tracks[c] = live
            if f % 300 == 0:
                yield DescriptionRecord(stamp, c, f'a {live[0][1]} near a {live[1][1]}',
                                        'bench', ())
        if made >= n_obs:
            return


def measure_inserts(url: str, n: int) -> dict:
    w = MemoryWriter(url, batch_size=500, flush_interval_s=0.5, queue_size=10_000_000,
                     watch_gap_s=2.0)
    records = list(scene(n, seed=1))
    t0 = time.perf_counter()
    w.put_many(records, block=True)
    assert w.flush(3600)
    dt = time.perf_counter() - t0
    w.close()
    obs = sum(isinstance(r, Observation) for r in records)
    return {'observations': obs, 'records': len(records), 'seconds': round(dt, 2),
            'observations_per_s': round(obs / dt), 'records_per_s': round(len(records) / dt)}


def fill(url: str, n: int) -> None:
    """Faster bulk fill for the big sizes: the writer's own commit path, one thread."""
    w = MemoryWriter(url, batch_size=20000, flush_interval_s=1.0, queue_size=10_000_000,
                     watch_gap_s=2.0)
    w.put_many(scene(n), block=True)
    assert w.flush(3600)
    w.close()


def p(values, q) -> float:
    return float(np.percentile(np.array(values) * 1e3, q))


def measure_queries(url: str, n_queries: int) -> dict:
    memory = SceneMemory(url, create=False, embeddings=False)
    watched = memory.query(Query('never_observed', ('giraffe',)))
    t_end = watched.watched_to_ns
    rng = random.Random(7)
    kinds = {
        'last_seen': lambda: Query('last_seen', (rng.choice(CLASSES),)),
        'first_seen': lambda: Query('first_seen', (rng.choice(CLASSES),)),
        'never_observed': lambda: Query('last_seen', ('giraffe',)),
        'duration': lambda: Query('duration', (rng.choice(CLASSES),)),
        'count_tracks (last 5 min)': lambda: Query('count_tracks', (rng.choice(CLASSES),),
                                                   t0_ns=t_end - 300 * 10**9, t1_ns=t_end),
        'count_tracks (all)': lambda: Query('count_tracks', (rng.choice(CLASSES),)),
        'region (60 s window)': lambda: _region(rng, t_end),
        'description': lambda: Query('description', text='a person near a car'),
        'free text "when did you last see a cup?"': None,
    }
    out = {}
    for name, make in kinds.items():
        times = []
        for _ in range(n_queries):
            t0 = time.perf_counter()
            if make is None:
                memory.ask('when did you last see a cup?')
            else:
                memory.query(make())
            times.append(time.perf_counter() - t0)
        out[name] = {'p50_ms': round(p(times, 50), 2), 'p95_ms': round(p(times, 95), 2)}
    memory.close()
    return out


def _region(rng, t_end):
    t1 = T0 + rng.randint(60, max(61, (t_end - T0) // 10**9)) * 10**9
    return Query('region', t0_ns=t1 - 60 * 10**9, t1_ns=t1, region=(0, 0, 0.5, 0.5),
                 region_name='top left')


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000, 1_000_000])
    ap.add_argument('--queries', type=int, default=40)
    ap.add_argument('--insert-n', type=int, default=100_000)
    ap.add_argument('--postgres', metavar='URL', help='also measure this PostgreSQL server')
    ap.add_argument('--postgres-temp', action='store_true',
                    help='also measure a throwaway local PostgreSQL '
                         '(test/helpers/postgres_server.py)')
    args = ap.parse_args()
    result = {'machine': f'{platform.machine()} {os.cpu_count()} cpu, {platform.platform()}',
              'date': time.strftime('%Y-%m-%d'), 'backends': {}}
    backends = [('sqlite', None)]
    pg_ctx = None
    if args.postgres_temp:
        from helpers.postgres_server import temporary_postgres
        pg_ctx = temporary_postgres()
        backends.append(('postgresql', pg_ctx.__enter__()))
    elif args.postgres:
        backends.append(('postgresql', args.postgres))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, pg_url in backends:
                res = result['backends'][name] = {}

                def fresh(tag):
                    if pg_url is None:
                        return str(Path(tmp) / f'{tag}.db')
                    Database(pg_url, create=False).drop_all()
                    return pg_url
                url = fresh('insert')
                res['insert'] = measure_inserts(url, args.insert_n)
                print(f'[{name}] insert: {res["insert"]}', flush=True)
                for n in args.sizes:
                    url = fresh(f'n{n}')
                    t0 = time.perf_counter()
                    fill(url, n)
                    db = Database(url, create=False)
                    size = db.size_bytes()
                    db.close()
                    if pg_url is None:
                        size = os.path.getsize(url) + (os.path.getsize(url + '-wal')
                                                       if os.path.exists(url + '-wal') else 0)
                    q = measure_queries(url, args.queries)
                    res[str(n)] = {'fill_s': round(time.perf_counter() - t0, 1),
                                   'bytes': size, 'bytes_per_observation': round(size / n, 1),
                                   'queries': q}
                    print(f'[{name}] n={n}: {size / n:.1f} bytes/observation', flush=True)
                    for k, v in q.items():
                        print(f'    {k:45s} p50 {v["p50_ms"]:8.2f} ms   p95 {v["p95_ms"]:8.2f} ms',
                              flush=True)
    finally:
        if pg_ctx is not None:
            pg_ctx.__exit__(None, None, None)
    from mr_mllm_ros.core.memory.question_words import Embedder
    e = Embedder()
    e(['warm-up'])
    t0 = time.perf_counter()
    for _ in range(20):
        e(['when did you last see the red bag?'])
    result['embed_question_ms'] = round((time.perf_counter() - t0) / 20 * 1e3, 1)
    print(f'one question embedding (all-MiniLM-L6-v2, CPU): {result["embed_question_ms"]} ms')
    write_json(args.json, result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
