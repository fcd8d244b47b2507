"""CPU thread budgets of the model nodes.

perception_node (the detector) and scene_node (the MLLM) run at the same time on one
machine. With every library's default - all cores each - their OpenMP / OpenCV pools
oversubscribe the CPUs, and a thread pool whose threads wait on each other at every layer
slows down far more than its share: on the 2-core development machine under load,
SmolLM2-135M decoded 4.4 tok/s on one torch thread and 1.8 tok/s on two
(docs/BENCHMARKS.md, "Decode rate in the graph"). So each node sets its pools to its own
budget (`perception.threads`, `scene.threads`; 0 = half the CPUs the process may use, at
least 1). One-process runs (replay, describe) run detector and MLLM one after the other
and keep the libraries' defaults.
"""

from __future__ import annotations

import os
import sys

#: Process environment for running models, set unless the user chose (the nodes and the
#: CLI set it before torch loads libgomp): torch's OpenMP workers sleep between parallel
#: regions instead of spinning. The inference thread waits for the GIL between torch ops
#: (the executor's threads hold it in turn), and on a shared or busy machine every other
#: process competes for the cores; a spinning OpenMP partner then burns a core doing
#: nothing. Measured in the 80 s soak on 2 vCPUs: descriptions 2 -> 15, questions
#: answered 0/16 -> 15/16 (docs/RELIABILITY.md); SmolLM2-135M on 2 threads under load
#: 1.4 -> 6.7 tok/s decode, 14 -> 87 tok/s prefill (docs/BENCHMARKS.md). On a many-core
#: robot with cores to spare, OMP_WAIT_POLICY=ACTIVE in the environment takes precedence.
INFERENCE_ENV = {'OMP_WAIT_POLICY': 'PASSIVE'}


def apply_inference_env(env=None) -> None:
    env = os.environ if env is None else env
    for key, value in INFERENCE_ENV.items():
        env.setdefault(key, value)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def node_threads(configured: int) -> int:
    """`configured`, or for 0 half the CPUs this process may use (at least 1)."""
    return configured if configured > 0 else max(1, available_cpus() // 2)


def apply_cpu_threads(n: int) -> str:
    """Size OpenCV's pool and, when loaded, torch's intra-op pool to `n` threads; returns
    what was set, for the node's log ('opencv 1, torch 1')."""
    import cv2
    cv2.setNumThreads(n)
    done = [f'opencv {n}']
    torch = sys.modules.get('torch')
    if torch is not None:
        torch.set_num_threads(n)
        done.append(f'torch {n}')
    return ', '.join(done)


def lower_thread_priority(native_id: int | None, nice: int) -> str:
    """Make the thread `native_id` of this process `nice` steps nicer than the calling
    thread (Linux keeps a niceness per thread, and a thread's children - e.g. the OpenMP
    team it starts - inherit it); never raises a priority. Returns what was done, for the
    node's log. Why: on a CPU-only robot the MLLM must not starve the detector
    (`scene.nice`, docs/BENCHMARKS.md "asking")."""
    if nice <= 0:
        return 'niceness unchanged'
    if native_id is None or not sys.platform.startswith('linux'):
        return f'niceness +{nice} not applied (per-thread niceness needs Linux)'
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice)
        if os.getpriority(os.PRIO_PROCESS, native_id) < target:
            os.setpriority(os.PRIO_PROCESS, native_id, target)
        return f'niceness {os.getpriority(os.PRIO_PROCESS, native_id)}'
    except OSError as e:  # the thread ended, or a policy forbids it
        return f'niceness +{nice} not applied: {e}'


#: Linux's autogroup of this process's session: with autogroups on (the default of many
#: distributions), a thread's niceness counts only against threads of the same group, and
#: each session (e.g. each node that `mr-mllm up` starts) is a group of its own.
AUTOGROUP = '/proc/self/autogroup'


def lower_group_priority(nice: int, path: str = AUTOGROUP) -> str:
    """Make this process's autogroup `nice` steps nicer (never nicer-than-now back), for a
    process that leads its own session and runs one node: otherwise its thread niceness
    does not count against the other nodes' processes. Returns what was done, for the log."""
    if nice <= 0:
        return 'group niceness unchanged'
    try:
        with open(path) as f:
            current = int(f.read().split('nice')[1])
        if current < nice:
            with open(path, 'w') as f:
                f.write(str(min(19, nice)))
        with open(path) as f:
            return f'group niceness {int(f.read().split("nice")[1])}'
    except (OSError, IndexError, ValueError) as e:  # no autogroups here (not Linux, off)
        return f'group niceness not applied: {e}'
