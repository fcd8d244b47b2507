"""Start nodes as separate processes from the same YAML that `ros2 launch` uses.

The one way this project starts a graph without `ros2 launch`: `mr-mllm up`, the demo,
graph tests and benchmarks all go through `NodeGroup`, so they exercise the very
command lines a robot runs. Children are always stopped (SIGINT, then SIGTERM, then
SIGKILL, each wait bounded) when the group exits, even on errors; and a child ends by
itself when the launching process dies, SIGKILL included (MR_MLLM_PARENT_PID +
ros/node_runtime.end_with_parent). With `respawn`, a child that exits is started again
after a back-off (1, 2, 4 ... 30 s; reset once it has run for a minute), at most
`respawn_max` times, as launch's `respawn=True` does.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import share_dir
from ..core.runtime.parent_watch import PARENT_PID_ENV
from ..topology import DEFAULT_LOG_LEVEL

log = logging.getLogger(__name__)

NODE_MODULES = {
    'perception': 'mr_mllm_ros.nodes.perception_node',
    'scene': 'mr_mllm_ros.nodes.scene_node',
    'combined': 'mr_mllm_ros.nodes.combined',  # perception + scene in one process
    'memory': 'mr_mllm_ros.nodes.memory_node',  # one for all cameras
}
#: The ROS node(s) each kind of process holds (node names before any remapping).
NODE_NAMES = {'perception': ('perception_node',), 'scene': ('scene_node',),
              'combined': ('perception_node', 'scene_node'), 'memory': ('memory_node',)}

#: Respawn back-off: first delay, cap, and how long a child must run to reset it.
RESPAWN_DELAY_S, RESPAWN_DELAY_MAX_S, RESPAWN_STABLE_S = 1.0, 30.0, 60.0


LARGE_MESSAGE_MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': '134217728',
                            'MALLOC_TRIM_THRESHOLD_': '268435456'}


def ensure_local_ros_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Discovery on this host only and a random domain unless the caller chose one (two
    demos or test runs on one machine then never see each other). Also points Fast DDS
    at the shipped large-image profile (16 MiB shared-memory segment) unless set."""
    env = os.environ if env is None else env
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    env.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 101)))
    profile = share_dir() / 'config' / 'fastdds_large_images.xml'
    if profile.is_file():
        env.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(profile))
    # glibc would mmap()/munmap() a fresh block for every multi-MB image message; these
    # keep such buffers on the heap (1080p cross-process p50 ~9 ms -> ~2.6 ms, see
    # docs/BENCHMARKS.md, transport). Only effective for processes started with this env.
    for key, value in LARGE_MESSAGE_MALLOC_ENV.items():
        env.setdefault(key, value)
    return env


def clean_dds_shm(timeout_s: float = 10.0) -> bool:
    """Remove Fast DDS shared-memory ports and segments that no live process holds
    (`fastdds shm clean`, shipped with the ros-fastdds wheel). A participant that was
    killed leaves its port behind (this machine once held 39 such ports), which a later
    participant given the same port number may inherit. Best effort: False when the tool
    is missing or fails."""
    tool = Path(sys.prefix) / 'tools' / 'fastdds' / 'fastdds.py'
    if not tool.is_file():
        return False
    try:
        return subprocess.run([sys.executable, str(tool), 'shm', 'clean'],
                              capture_output=True, timeout=timeout_s).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@dataclass
class NodeSpec:
    kind: str  # key of NODE_MODULES
    namespace: str = ''
    params_files: list[str] = field(default_factory=list)
    parameters: dict[str, object] = field(default_factory=dict)  # name -> value (-p)
    log_level: str = DEFAULT_LOG_LEVEL
    name: str = ''  # remap the node name (several of a kind in one namespace)
    remappings: list[tuple[str, str]] = field(default_factory=list)  # topic (from, to)

    def node_paths(self) -> list[str]:
        """Fully qualified names of the node(s) this process runs, e.g. /cam/scene_node."""
        ns = f'/{self.namespace.strip("/")}' if self.namespace.strip('/') else ''
        names = [self.name] if self.name else NODE_NAMES[self.kind]
        return [f'{ns}/{n}' for n in names]

    def command(self) -> list[str]:
        cmd = [sys.executable, '-m', NODE_MODULES[self.kind], '--ros-args',
               '--log-level', self.log_level]
        if self.namespace:
            cmd += ['-r', f'__ns:=/{self.namespace.strip("/")}']
        if self.name:
            cmd += ['-r', f'__node:={self.name}']
        for source, target in self.remappings:
            cmd += ['-r', f'{source}:={target}']
        for f in self.params_files:
            cmd += ['--params-file', str(Path(f).resolve())]
        for k, v in self.parameters.items():
            cmd += ['-p', f'{k}:={_param_literal(v)}']
        return cmd


def _param_literal(v: object) -> str:
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, (list, tuple)):
        return '[' + ','.join(_param_literal(x) for x in v) + ']'
    if isinstance(v, str):
        return f'"{v}"' if v else '""'
    return str(v)


class NodeGroup:
    """`with NodeGroup(specs) as g:` runs the nodes; `g.alive()` tells if all still run."""

    def __init__(self, specs: list[NodeSpec], env: dict[str, str] | None = None,
                 log_dir: str | os.PathLike | None = None, respawn: bool = False,
                 respawn_max: int = 10):
        self.specs = specs
        self.env = dict(os.environ if env is None else env)
        ensure_local_ros_env(self.env)
        # The children end when we do, however we end (see end_with_parent).
        self.env[PARENT_PID_ENV] = str(os.getpid())
        self.log_dir = Path(log_dir) if log_dir else None
        self.respawn, self.respawn_max = respawn, respawn_max
        self.respawns = 0  # restarts so far, all children together
        self.procs: list[subprocess.Popen] = []
        self._started: list[float] = []
        self._delay: list[float] = []
        self._restart_at: list[float | None] = []
        self._logs = []
        self._killed = False  # a child did not stop on SIGINT

    def __enter__(self) -> 'NodeGroup':
        try:
            for i in range(len(self.specs)):
                self.procs.append(self._spawn(i))
                self._started.append(time.monotonic())
                self._delay.append(RESPAWN_DELAY_S)
                self._restart_at.append(None)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, i: int) -> subprocess.Popen:
        # Always from the thread that will outlive the children (the caller's): the
        # kernel's parent-death signal follows the forking *thread*.
        spec, out = self.specs[i], None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            label = f'{spec.namespace.strip("/").replace("/", "_") or "root"}_' \
                    f'{spec.name or spec.kind}'
            out = open(self.log_dir / f'{i:02d}_{label}.log', 'ab')
            self._logs.append(out)
        return subprocess.Popen(
            spec.command(), env=self.env, stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True)  # Ctrl-C in a terminal reaches us, not them

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def wait(self, duration: float | None = None) -> None:
        """Until a child exits for good (or `duration` seconds pass). With respawn, a
        child that exits is restarted after its back-off while restarts are left."""
        deadline = None if duration is None or duration <= 0 else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            if not self.respawn:
                if not self.alive():
                    return
            elif not self._supervise():
                return
            time.sleep(0.2)

    def _supervise(self) -> bool:
        """One look at the children: schedule and run restarts. False when a child has
        exited and may not be restarted (respawn_max reached)."""
        now = time.monotonic()
        for i, p in enumerate(self.procs):
            code = p.poll()
            if code is None:
                if now - self._started[i] >= RESPAWN_STABLE_S:
                    self._delay[i] = RESPAWN_DELAY_S  # it ran long enough: back-off resets
                continue
            if self._restart_at[i] is None:
                if self.respawns >= self.respawn_max:
                    log.error('%s exited (code %s); no restarts left (%d made)',
                              self.specs[i].node_paths()[0], code, self.respawns)
                    return False
                self._restart_at[i] = now + self._delay[i]
                log.warning('%s exited (code %s); restarting in %.0f s (restart %d of %d)',
                            self.specs[i].node_paths()[0], code, self._delay[i],
                            self.respawns + 1, self.respawn_max)
                self._delay[i] = min(RESPAWN_DELAY_MAX_S, self._delay[i] * 2)
            elif now >= self._restart_at[i]:
                self.respawns += 1
                self._restart_at[i] = None
                self.procs[i] = self._spawn(i)
                self._started[i] = time.monotonic()
        return True

    def stop(self, grace_s: float = 5.0) -> list[int | None]:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            running = [p for p in self.procs if p.poll() is None]
            if not running:
                break
            if sig != signal.SIGINT:
                self._killed = True
            for p in running:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(p.poll() is None for p in running):
                time.sleep(0.05)
        for f in self._logs:
            f.close()
        self._logs = []
        if self._killed:
            clean_dds_shm()   # a killed participant may leave its shared-memory port behind
        return [p.poll() for p in self.procs]
