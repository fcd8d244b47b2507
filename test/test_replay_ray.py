"""`mr-mllm replay --ray`: a local Ray (started and shut down by the command) on three
small bags, split into time segments, gives the serial run's results.jsonl line for
line, timings aside, and the same result bags."""

import json
from pathlib import Path

import pytest
from helpers.replay_bags import NS, T0, colour_frame, image_msg, write_bag, write_config  # noqa: E402
from rosbags.rosbag2 import Reader

from mr_mllm_ros.cli import main
from mr_mllm_ros.replay.outputs import strip_timings

pytest.importorskip('ray')


def _bags(tmp: Path) -> list[Path]:
    from mr_mllm_ros.core.assets.sample_images import load_sample
    cam = load_sample('camera')  # two people: hazard alerts with grounding
    bags = []
    for k, storage in enumerate(('sqlite3', 'mcap', 'sqlite3')):
        topics = {
            '/front/image': [image_msg(colour_frame(i), 'rgb8', T0 + i * NS // 2)
                             for i in range(4)],
            '/rear/image/compressed': [image_msg(cam if i % 2 else colour_frame(i), 'jpeg',
                                                 T0 + i * NS // 2) for i in range(4)],
        }
        bags.append(write_bag(tmp / f'bag{k}_{storage}', storage, topics))
    return bags


@pytest.mark.timeout(240)
def test_ray_results_identical_to_serial(tmp_path, capsys):
    bags = _bags(tmp_path)
    cfg = write_config(tmp_path)
    common = [*map(str, bags), '--config', str(cfg), '--segment-s', '1', '--no-progress']
    assert main(['replay', *common, '--out', str(tmp_path / 'serial')]) == 0
    assert main(['replay', *common, '--out', str(tmp_path / 'ray'), '--ray',
                 '--ray-workers', '2', '--ray-init-timeout', '90']) == 0
    serial = (tmp_path / 'serial' / 'results.jsonl').read_text().splitlines()
    fanned = (tmp_path / 'ray' / 'results.jsonl').read_text().splitlines()
    assert len(serial) == 3 * 8
    strip = [json.dumps(strip_timings(json.loads(x))) for x in serial]
    assert strip == [json.dumps(strip_timings(json.loads(x))) for x in fanned]
    assert sum(1 for x in serial if '"person_anywhere"' in x) == 6  # 2 per bag
    for bag in bags:
        with Reader(tmp_path / 'serial' / 'bags' / bag.name) as a, \
                Reader(tmp_path / 'ray' / 'bags' / bag.name) as b:
            assert {c.topic: c.msgcount for c in a.connections} == \
                {c.topic: c.msgcount for c in b.connections}
    import ray
    assert not ray.is_initialized()  # shut down after the run
