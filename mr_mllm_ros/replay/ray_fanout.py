"""Replay units as Ray tasks: on a local Ray started here, or on an existing cluster.

Each worker is a Ray actor holding one UnitProcessor (models loaded once per worker) and
asking for `cpus_per_worker` CPUs and, when the config puts a model on CUDA, a GPU
(`gpus_per_worker`). Units - (bag, topic, time segment) - go to whichever worker is
free; results come back whole and are written in plan order (bag, topic, time), the
order the serial run writes, so results.jsonl is the same file, timings aside.

Workers read the bags and model files from the same paths as the driver: on a cluster,
put them on a shared filesystem (or the same paths on every node) and install the
package everywhere. Every wait is bounded: `init_timeout_s` for Ray to start or connect,
`task_timeout_s` for one unit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from typing import Callable

from ..core.config import Config
from ..core.errors import BagError
from ..core.runtime.offline import OFFLINE_ENV, apply_offline_env
from .processing import UnitProcessor

log = logging.getLogger(__name__)

#: Environment every worker gets: offline model libraries, no usage reporting.
WORKER_ENV_KEYS = (*OFFLINE_ENV, 'YOLO_CONFIG_DIR', 'MR_MLLM_MODELS_DIR')


def uses_cuda(config: Config, describe: bool) -> bool:
    devices = [config.detector.device] + ([config.mllm.device] if describe and
                                          config.mllm.backend != 'none' else [])
    return any(str(d).startswith('cuda') for d in devices)


class _ReplayWorker:
    """Body of the Ray actor (decorated at run time so `ray` stays an optional import)."""

    def __init__(self, config: Config, describe: bool, every: int, thumb_side: int,
                 threads: int):
        apply_offline_env()
        import cv2
        cv2.setNumThreads(max(1, threads))  # one worker must not take every core
        self.processor = UnitProcessor(config, describe=describe, every=every,
                                       thumb_side=thumb_side)

    def run(self, unit, info, done_items):
        return self.processor.run_unit(unit, info, Counter(dict(done_items)))

    def ready(self) -> bool:
        return True


def _init_ray(ray, address: str | None, num_cpus: int | None, num_gpus: int | None,
              timeout_s: float) -> None:
    """ray.init bounded by `timeout_s`. It must run on this thread: Ray ties the life of
    the processes it starts (GCS, raylet) to the thread that starts them."""
    env = {k: os.environ[k] for k in WORKER_ENV_KEYS if k in os.environ}
    kwargs = dict(include_dashboard=False, log_to_driver=False,
                  logging_level=logging.WARNING, runtime_env={'env_vars': env})
    if address:
        kwargs['address'] = address
    else:
        # A local Ray: this machine only, sized for the workers we start.
        kwargs.update(num_cpus=num_cpus, num_gpus=num_gpus, address='local',
                      object_store_memory=512 * 1024 * 1024)
    what = f'connect to {address}' if address else 'start'
    try:
        with _deadline(timeout_s):
            ray.init(**kwargs)
    except _Timeout:
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise BagError(f'Ray did not {what} within {timeout_s:.0f} s') from None
    except Exception as e:  # noqa: BLE001 - Ray raises many types; say what failed
        raise BagError(f'Ray could not {what}: {e}') from e


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise _Timeout in this (main) thread after `seconds`; restores an outer SIGALRM
    timer (e.g. pytest-timeout's) with the time it had left. Off the main thread Python
    cannot take signals, and only Ray's own timeouts apply."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise _Timeout

    t0 = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expired)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - t0), 0.001))


def run_units_on_ray(units: list, infos: dict, config: Config, options, done: Counter,
                     emit: Callable, *, address: str | None = None, workers: int | None = None,
                     cpus_per_worker: float = 1, gpus_per_worker: float | None = None,
                     init_timeout_s: float = 120.0, task_timeout_s: float = 3600.0,
                     progress=None) -> None:
    """Process `units` on Ray; `emit(UnitResult)` is called in plan order."""
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    try:
        import ray
    except ImportError as e:
        raise BagError('--ray needs the `ray` package (pip install ray)') from e
    if not units:
        return
    gpus = gpus_per_worker if gpus_per_worker is not None else (
        1 if uses_cuda(config, options.describe) else 0)
    local_workers = workers or max(1, int((os.cpu_count() or 1) // max(cpus_per_worker, 1)))
    _init_ray(ray, address,
              None if address else max(1, int(round(local_workers * cpus_per_worker))),
              None if address else (None if gpus else 0), init_timeout_s)
    try:
        available = ray.cluster_resources()
        fit = int(available.get('CPU', 1) // max(cpus_per_worker, 1e-3))
        if gpus:
            fit = min(fit, int(available.get('GPU', 0) // gpus))
            if fit < 1:
                raise BagError(f'the config runs a model on CUDA but the Ray cluster has '
                               f'{available.get("GPU", 0)} GPUs')
        n_workers = max(1, min(len(units), workers or fit, fit))
        actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus)(_ReplayWorker)
        threads = max(1, int(cpus_per_worker))
        actors = [actor_cls.remote(config, options.describe, options.every,
                                   options.thumb_side, threads) for _ in range(n_workers)]
        log.info('Ray: %d worker(s) x %g CPU%s for %d unit(s)', n_workers, cpus_per_worker,
                 f' + {gpus:g} GPU' if gpus else '', len(units))
        _dispatch(ray, actors, units, infos, done, emit, task_timeout_s, progress)
    finally:
        ray.shutdown()


def _dispatch(ray, actors, units, infos, done: Counter, emit, task_timeout_s: float,
              progress) -> None:
    idle = list(actors)
    done_by_topic: dict[tuple[str, str], list] = {}  # (bag, topic) -> [(key, count)]
    for k, n in done.items():
        if n > 0:
            done_by_topic.setdefault((k[0], k[1]), []).append((k, n))
    pending: dict = {}  # object ref -> (unit index, actor, submit time)
    ready_results: dict[int, object] = {}
    next_unit, next_emit = 0, 0
    while next_emit < len(units):
        while idle and next_unit < len(units):
            unit = units[next_unit]
            mine = [(k, n) for k, n in done_by_topic.get((unit.bag, unit.topic), ())
                    if (unit.start_ns is None or k[2] >= unit.start_ns)
                    and (unit.stop_ns is None or k[2] < unit.stop_ns)]
            actor = idle.pop()
            ref = actor.run.remote(unit, infos[unit.bag], mine)
            pending[ref] = (next_unit, actor, time.monotonic())
            next_unit += 1
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        now = time.monotonic()
        if not ready:
            late = [units[i] for i, _, t in pending.values() if now - t > task_timeout_s]
            if late:
                raise BagError(f'a Ray task ran longer than {task_timeout_s:.0f} s '
                               f'({late[0].bag} {late[0].topic} segment {late[0].segment})')
            continue
        ref = ready[0]
        index, actor, _ = pending.pop(ref)
        try:
            ready_results[index] = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - RayTaskError/RayActorError: say which unit
            u = units[index]
            raise BagError(f'Ray task for {u.bag} {u.topic} segment {u.segment} failed: '
                           f'{e}') from e
        idle.append(actor)
        if progress is not None:
            progress.update(len(ready_results[index].outputs))
        while next_emit in ready_results:
            emit(ready_results.pop(next_emit))
            next_emit += 1
