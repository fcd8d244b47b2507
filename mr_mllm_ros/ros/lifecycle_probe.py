"""Ask lifecycle nodes for their state from outside (what `ros2 lifecycle get` does)."""

from __future__ import annotations

import threading
import time

from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import GetState

from .client import RosCallError, RosClient

_ASK_S = 2.0  # per get_state call: discovery and answer


def wait_active(node_paths: list[str], timeout_s: float, ros: RosClient | None = None,
                stop: threading.Event | None = None) -> list[str]:
    """Poll each node's `get_state` until all are active, `timeout_s` passes or `stop`
    is set; returns the nodes not (yet) active, [] when all are."""
    if ros is None:
        with RosClient('mr_mllm_lifecycle_probe') as own:
            return wait_active(node_paths, timeout_s, own, stop)
    deadline = time.monotonic() + timeout_s
    pending = list(node_paths)
    while pending and not (stop is not None and stop.is_set()):
        for path in list(pending):
            left = deadline - time.monotonic()
            if left <= 0:
                return pending
            try:
                reply = ros.call(GetState, f'{path}/get_state', GetState.Request(),
                                 timeout=_ASK_S, wait_service_s=min(_ASK_S, left))
            except RosCallError:
                continue
            if reply.current_state.id == State.PRIMARY_STATE_ACTIVE:
                pending.remove(path)
        if pending:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    return pending
