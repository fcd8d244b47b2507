"""A child process that ends with its parent: `mr-mllm up` never leaves orphan nodes.

The launcher (app/launcher.py) names itself in the child's environment
(MR_MLLM_PARENT_PID); the node process calls `end_with_parent()` at start.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

#: Set by the launcher (app/launcher.py) in a child's environment: the PID the child must
#: not outlive.
PARENT_PID_ENV = 'MR_MLLM_PARENT_PID'
_PR_SET_PDEATHSIG = 1
_PARENT_POLL_S = 1.0


def end_with_parent(env=None) -> str:
    """Make this process end (SIGTERM, i.e. a clean rclpy shutdown) when the process named
    by MR_MLLM_PARENT_PID dies, whatever killed it - SIGKILL included - so `mr-mllm up`
    never leaves orphan nodes behind.

    Linux: prctl(PR_SET_PDEATHSIG), delivered by the kernel at once. It fires when the
    *thread* that forked us ends, so the launcher starts children from its main thread.
    The parent may already be gone before prctl runs: checked right after. Elsewhere
    (macOS, BSD): a daemon thread polls getppid() once a second. Returns which of the two
    is in force ('' when no parent was named)."""
    env = os.environ if env is None else env
    try:
        parent = int(env.get(PARENT_PID_ENV, '0'))
    except ValueError:
        parent = 0
    if parent <= 0:
        return ''
    how = 'poll'
    if sys.platform.startswith('linux'):
        try:
            libc = ctypes.CDLL('libc.so.6', use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                how = 'pdeathsig'
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # died before we could ask to be told
        os.kill(os.getpid(), signal.SIGTERM)
    elif how == 'poll':
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(_PARENT_POLL_S)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=watch, name='parent_watch', daemon=True).start()
    return how
