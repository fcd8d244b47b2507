"""`mr-mllm replay` reasons when the live graph would (core.reasoning.schedule in message
time), says why, and replays a long bag with descriptions on.

The MLLM is scripted (an OpenAI-compatible stub server, or a ScriptedBackend in process):
these tests check when the MLLM is called and what is counted, not what it says."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import schedule_bags as sb  # noqa: E402
from helpers.openai_stub_server import StubOpenAiServer  # noqa: E402
from helpers.scripted_backend import ScriptedBackend  # noqa: E402

from mr_mllm_ros.cli import main
from mr_mllm_ros.core.assets.sample_images import SAMPLES
from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.pipeline import Pipeline
from mr_mllm_ros.core.types import Box, Detection, DetectionSet
from mr_mllm_ros.eval.datasets import photo_scenes, write_bag
from mr_mllm_ros.replay import outputs as o
from mr_mllm_ros.replay.runner import PROGRESS_LINE_FRAMES, ReplayOptions, run_replay


def records(out: Path) -> list[dict]:
    return list(o.iter_results(out / o.RESULTS))


def test_replay_reasons_at_the_live_schedule_and_counts_why(tmp_path, capsys):
    bag = sb.write_scene_bag(tmp_path / 'scenes')
    with StubOpenAiServer(default=sb.script) as server:
        cfg = sb.write_config(tmp_path, server.url)
        assert main(['replay', str(bag), '--out', str(tmp_path / 'out'), '--config', str(cfg),
                     '--no-progress']) == 0
        printed = capsys.readouterr().out
        assert main(['replay', str(bag), '--out', str(tmp_path / 'every'), '--config',
                     str(cfg), '--no-progress', '--describe-every-frame']) == 0
    recs = records(tmp_path / 'out')
    assert len(recs) == len(sb.frame_times()) and all(r['status'] == 'ok' for r in recs)
    steps = {sb.stamp_s(r['stamp_ns']): r['trigger'] for r in recs if r['trigger']}
    assert steps == sb.EXPECTED_STEPS
    assert all((r['description'] is not None) == bool(r['trigger']) for r in recs)
    # the judgement ran in each step; it says "unusual" where a person or a tie is seen
    judged = sorted(sb.stamp_s(r['stamp_ns']) for r in recs for a in r['alerts']
                    if a['rule'] == 'judged_unusual')
    assert judged == [0.0, 4.5, 8.5, 15.5]
    calls = {'change': 5, 'rate': 1, 'every_frame': 0, 'question': 0}
    out = tmp_path / 'out'
    assert json.loads((out / o.SUMMARY).read_text())['mllm_calls'] == calls
    assert json.loads((out / o.RUN_FILE).read_text())['mllm_calls'] == calls
    assert 'MLLM reasoning steps: 6 (5 change, 1 rate, 0 every frame, 0 question)' in printed
    assert '6 MLLM reasoning steps: 5 change, 1 rate' in (out / 'report.html').read_text()
    every = records(tmp_path / 'every')
    assert [r['trigger'] for r in every] == ['every_frame'] * len(every)
    assert all(r['description'] is not None for r in every)


def test_resuming_into_the_same_folder_keeps_the_count(tmp_path):
    bag = sb.write_scene_bag(tmp_path / 'scenes')
    with StubOpenAiServer(default=sb.script) as server:
        cfg = sb.write_config(tmp_path, server.url)
        args = ['replay', str(bag), '--out', str(tmp_path / 'out'), '--config', str(cfg),
                '--no-progress']
        assert main(args) == 0
        assert main(args) == 0  # nothing new: run.json's count is not a changed setting
    assert json.loads((tmp_path / 'out' / o.RUN_FILE).read_text())['mllm_calls']['change'] == 5


class PhotoDetector:
    """Stub detector: names which sample photo a frame shows (nearest mean colour), as
    one confident box. Fast, so the long bag measures the replay and the schedule."""

    name = 'photo stub'
    settings = None

    def __init__(self, photos):
        self.means = np.array([p.reshape(-1, 3).mean(0) for p in photos])

    def detect(self, frame):
        mean = frame.image.reshape(-1, 3).mean(0)
        k = int(np.argmin(np.abs(self.means - mean).sum(1)))
        det = Detection(0, list(SAMPLES)[k], 0.9, Box(0, 0, frame.width / 2, frame.height / 2))
        return DetectionSet((det,), frame.width, frame.height, frame.stamp_ns,
                            frame.frame_id, self.name, {})

    def close(self):
        pass


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~80 s alone; minutes when the CPUs are shared
def test_ten_minute_30hz_bag_replays_with_descriptions_at_the_default_schedule(
        tmp_path, caplog):
    """18,000 frames (the sample photos, 20 s each in turn) with descriptions on and the
    packaged schedule (0.2 Hz, on change, >= 2 s apart, a change once it held 1.5 s of
    scene.change_hold_s 2 s): 4 steps per 20-s scene (the change, then 5, 10, 15 s later),
    one more per replay unit (ReplayOptions.segment_s 300 s: 2 units, each starting
    afresh), 122 in all instead of 18,000."""
    minutes, rate = 10, 30.0
    bag = tmp_path / 'long'
    write_bag(bag, '/cam/image/compressed', photo_scenes(minutes * 60, rate, 20.0, side=96),
              rate_hz=rate, compressed=True)
    photos = list(photo_scenes(len(SAMPLES) * 20, 1 / 20, 20.0, side=96))
    backend = ScriptedBackend(reply=lambda r: '<ground>A photo</ground><objects><obj0>'
                              '</objects>.' if r.task == 'describe' else '')
    # No looker: it would add objects it sees and no box explains (the tripod in the
    # camera photo), and each object is one more connector call of the word plan; with
    # one box per frame a description is one MLLM call, so the calls count the steps.
    config = load_config(overrides={'looker.enabled': False})
    pipeline = Pipeline(config, detector=PhotoDetector(photos), backend=backend)
    with caplog.at_level(logging.INFO, logger='mr_mllm_ros.replay.runner'):
        result = run_replay(ReplayOptions(bags=(str(bag),), out=str(tmp_path / 'out')),
                            config, pipeline=pipeline)
    assert result.frames_ok == result.frames == minutes * 60 * rate
    # A unit's first frame is a change at once (nothing described yet), every later
    # scene's change settles 1.5 s after its switch. So the unit's first scene gets a rate
    # step 20 s in, on the next scene's first frame, and that scene's change waits for the
    # 2 s interval (22 s); from then on a change settles just when the rate falls due
    # (every 20 s) and takes its place. Per unit: 15 changes, 46 rate steps.
    assert result.mllm_calls == {'change': 30, 'rate': 92, 'every_frame': 0, 'question': 0}
    assert sum(1 for r in backend.requests if r.task == 'describe') == 122
    described = [r for r in records(tmp_path / 'out') if r['description'] is not None]
    assert len(described) == 122 and all(r['trigger'] for r in described)
    # stderr is not a terminal here: a progress line per PROGRESS_LINE_FRAMES frames
    lines = [m for m in caplog.messages if m.startswith('replay: ') and 'ETA' in m]
    assert len(lines) == result.frames // PROGRESS_LINE_FRAMES
    print(f'\n10-min 30 Hz bag, stub detector + scripted MLLM: {result.frames} frames in '
          f'{result.wall_s:.0f} s = {result.frames / result.wall_s:.0f} frames/s, '
          f'{sum(result.mllm_calls.values())} reasoning steps')
