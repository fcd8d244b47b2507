"""Where a window's CPU went: CPU seconds of given processes (and of the whole machine)
between two snapshots, from /proc (Linux only; benchmarks, not the package).

    snap = cpu_snapshot({'perception': [pid], 'clients': pids})
    ...
    print(cpu_delta(snap, cpu_snapshot(same groups)))  # CPU s per wall s, per group
"""

from __future__ import annotations

import os
import time

TICK = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100


def _stat_cpu_s(path: str) -> float:
    """utime + stime of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:  # the process or thread ended
        return 0.0
    fields = text[text.rfind(')') + 2:].split()  # the name may hold spaces and parens
    return (int(fields[11]) + int(fields[12])) / TICK


def process_cpu_s(pid: int) -> float:
    return _stat_cpu_s(f'/proc/{pid}/stat')


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each live thread of `pid`, keyed 'name/tid'."""
    out = {}
    try:
        tids = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f'/proc/{pid}/task/{tid}/comm') as f:
                name = f.read().strip()
        except OSError:
            continue
        out[f'{name}/{tid}'] = _stat_cpu_s(f'/proc/{pid}/task/{tid}/stat')
    return out


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent busy (not idle or waiting for I/O) since boot."""
    with open('/proc/stat') as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def cpu_snapshot(groups: dict[str, list[int]], threads_of: int | None = None) -> dict:
    """CPU seconds so far of each group of processes, of the machine, and (threads_of)
    of each thread of one process."""
    return {'t': time.monotonic(), 'machine': machine_busy_s(),
            'groups': {g: sum(process_cpu_s(p) for p in pids) for g, pids in groups.items()},
            'threads': thread_cpu_s(threads_of) if threads_of else {}}


def cpu_delta(before: dict, after: dict, top_threads: int = 4) -> dict:
    """CPU seconds per wall second between two snapshots: each group, the machine, the
    rest of the machine (processes outside the groups: other users' jobs), and the busiest
    threads of the `threads_of` process."""
    dt = max(1e-9, after['t'] - before['t'])
    groups = {g: round((after['groups'][g] - before['groups'].get(g, 0.0)) / dt, 3)
              for g in after['groups']}
    machine = round((after['machine'] - before['machine']) / dt, 3)
    threads = sorted(((round((v - before['threads'].get(k, 0.0)) / dt, 3), k)
                      for k, v in after['threads'].items()), reverse=True)
    return {'window_s': round(dt, 1), 'cpu_per_s': groups, 'machine': machine,
            'others': round(machine - sum(groups.values()), 3),
            'threads': {k: v for v, k in threads[:top_threads] if v > 0}}
