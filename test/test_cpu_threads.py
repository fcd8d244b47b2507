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
