"""Per-node CPU thread budgets (core.runtime.cpu_threads): 0 = half the CPUs this process
may use, at least 1; applying sets OpenCV's pool and torch's when torch is loaded."""

import cv2
import torch

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.runtime import cpu_threads


def test_zero_is_half_the_cpus_at_least_one(monkeypatch):
    for cpus, expected in ((1, 1), (2, 1), (3, 1), (16, 8)):
        monkeypatch.setattr(cpu_threads, 'available_cpus', lambda: cpus)
        assert cpu_threads.node_threads(0) == expected
    assert cpu_threads.node_threads(3) == 3
    config = load_config()
    assert config.perception.threads == 0 and config.scene.threads == 0


def test_apply_sets_opencv_and_torch_pools():
    before = cv2.getNumThreads(), torch.get_num_threads()
    try:
        assert cpu_threads.apply_cpu_threads(1) == 'opencv 1, torch 1'
        assert cv2.getNumThreads() == 1 and torch.get_num_threads() == 1
    finally:
        cv2.setNumThreads(before[0])
        torch.set_num_threads(before[1])


def test_lower_thread_priority_nices_only_that_thread_and_what_it_starts():
    """scene.nice: the MLLM thread (and e.g. the OpenMP team it starts) yields the CPU to
    the detector; the calling thread - the executor, answering cancels - and the rest of
    the process keep their priority; a priority is never raised back."""
    import os
    import threading

    from mr_mllm_ros.core.runtime.inference_worker import InferenceWorker
    seen = {}

    def tick():
        seen['self'] = os.getpriority(os.PRIO_PROCESS, 0)
        child = threading.Thread(
            target=lambda: seen.__setitem__('child', os.getpriority(os.PRIO_PROCESS, 0)))
        child.start()
        child.join()

    base = os.getpriority(os.PRIO_PROCESS, 0)
    worker = InferenceWorker('mllm', tick)
    worker.start()
    try:
        tid = worker.native_id
        assert cpu_threads.lower_thread_priority(tid, 0) == 'niceness unchanged'
        assert os.getpriority(os.PRIO_PROCESS, tid) == base
        expected = min(19, base + 5)
        assert cpu_threads.lower_thread_priority(tid, 5) == f'niceness {expected}'
        assert cpu_threads.lower_thread_priority(tid, 2) == f'niceness {expected}'
        worker.tick()
        for _ in range(200):
            if 'child' in seen:
                break
            threading.Event().wait(0.01)
        assert seen == {'self': expected, 'child': expected}
        assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the caller's own is untouched
    finally:
        worker.stop()
    assert 'not applied' in cpu_threads.lower_thread_priority(None, 5)
    assert load_config().scene.nice == 10


def test_lower_group_priority_in_a_session_of_its_own():
    """A node process that leads its own session is an autogroup of its own (Linux): its
    group is made nicer, and the group of the process that started it is not."""
    import os
    import subprocess
    import sys

    import pytest
    if not os.path.exists(cpu_threads.AUTOGROUP):
        pytest.skip('this kernel has no autogroups (the thread niceness is what counts)')
    with open(cpu_threads.AUTOGROUP) as f:
        ours = f.read()
    code = ('from mr_mllm_ros.core.runtime import cpu_threads as c; '
            'print(c.lower_group_priority(0)); print(c.lower_group_priority(7)); '
            'print(c.lower_group_priority(3)); print(open(c.AUTOGROUP).read().split()[-1])')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=60, start_new_session=True, check=True).stdout.split('\n')
    assert out[:4] == ['group niceness unchanged', 'group niceness 7', 'group niceness 7', '7']
    with open(cpu_threads.AUTOGROUP) as f:
        assert f.read() == ours


def test_scene_node_nices_its_group_only_alone_in_its_session():
    """scene_node alone in its process and session: its MLLM thread and its autogroup;
    sharing the process with perception_node (the combined node): the thread only; with
    no MLLM (rules only): neither."""
    import os
    import subprocess
    import sys

    import pytest
    if not os.path.exists(cpu_threads.AUTOGROUP):
        pytest.skip('this kernel has no autogroups (the thread niceness is what counts)')
    code = '''
import sys
from types import SimpleNamespace as NS
from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.runtime import cpu_threads as c
from mr_mllm_ros.core.runtime.inference_worker import InferenceWorker
from mr_mllm_ros.nodes.scene_node import SceneNode
nodes, with_mllm = int(sys.argv[1]), sys.argv[2] == 'mllm'
worker = InferenceWorker('mllm', lambda: None)
worker.start()
fake = NS(_worker=worker, executor=NS(get_nodes=lambda: [None] * nodes))
pipeline = NS(reasoner=object() if with_mllm else None)
print(SceneNode._lower_priority(fake, load_config(), pipeline))
print(open(c.AUTOGROUP).read().split()[-1])
worker.stop()
'''
    outs = [subprocess.run([sys.executable, '-c', code, str(n), mllm], capture_output=True,
                           text=True, timeout=120, start_new_session=True,
                           check=True).stdout.split('\n')[:2]
            for n, mllm in ((1, 'mllm'), (2, 'mllm'), (1, 'none'))]
    base = os.getpriority(os.PRIO_PROCESS, 0)
    thread = f'MLLM thread niceness {min(19, base + 10)}'
    assert outs[0] == [f'{thread}, group niceness 10', '10']
    assert outs[1] == [thread, '0']  # the combined node: perception shares the group
    assert outs[2] == ['niceness unchanged (no MLLM)', '0']
