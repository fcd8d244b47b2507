"""One reasoning schedule live and in replay: a bag of real photos with scene changes
(test/helpers/schedule_bags.py) is published into the live graph (perception_node + scene_node
as separate processes) at its recorded rate, and replayed by `mr-mllm replay`; both use
the same scripted OpenAI-compatible MLLM. The frames described and the alerts (rule,
stamp) must match within one frame period.

Checks when the MLLM is called and which alerts follow, not what the MLLM says."""

import time
from pathlib import Path

import pytest
from helpers import schedule_bags as sb  # noqa: E402
from helpers.graph_helpers import DISCOVERY_S, first_exchange  # noqa: E402
from helpers.openai_stub_server import StubOpenAiServer  # noqa: E402
from helpers.replay_bags import T0  # noqa: E402
from sensor_msgs.msg import CompressedImage

from mr_mllm_interfaces.msg import CornerCaseAlert, SceneDescription
from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec
from mr_mllm_ros.cli import main
from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.replay import bag_reader
from mr_mllm_ros.replay import outputs as o
from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.client import RosClient
from mr_mllm_ros.ros.qos import ALERTS_QOS, RESULTS_QOS

pytestmark = pytest.mark.graph
NS_ = 'parity'


def publish_bag(pub, bag: Path) -> None:
    """The bag's messages (serialized, as recorded) at their recorded rate."""
    info = bag_reader.open_bag(bag)
    raws = list(bag_reader.iter_raw(info, [sb.TOPIC]))
    start, first = time.monotonic(), raws[0].log_time_ns
    for raw in raws:
        delay = start + (raw.log_time_ns - first) / 1e9 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pub.publish(bytes(raw.data))


def paired(live: list[float], replay: list[float]) -> bool:
    return len(live) == len(replay) and all(
        abs(a - b) <= sb.PERIOD_S + 1e-6 for a, b in zip(sorted(live), sorted(replay)))


@pytest.mark.timeout(600)
def test_live_graph_and_replay_reason_and_alert_on_the_same_frames(tmp_path):
    bag = sb.write_scene_bag(tmp_path / 'scenes')
    with StubOpenAiServer(default=sb.script) as server:
        cfg = sb.write_config(tmp_path, server.url)
        scene = {**sb.mllm_settings(server.url), 'camera.compressed': True,
                 'alerts.rules_file': str(tmp_path / 'schedule_rules.yaml')}
        specs = [NodeSpec('perception', NS_, parameters={'camera.compressed': True,
                                                         **sb.DETECTOR}),
                 NodeSpec('scene', NS_, parameters=scene)]
        logs = tmp_path / 'logs'
        with NodeGroup(specs, log_dir=logs), RosClient('parity_test') as ros:
            pub = ros.publisher(CompressedImage, f'/{NS_}/image/compressed', 10)
            descriptions = ros.collect(SceneDescription, f'/{NS_}/scene_description',
                                       RESULTS_QOS)
            alerts = ros.collect(CornerCaseAlert, f'/{NS_}/alerts', ALERTS_QOS)
            assert ros.wait_for_subscribers(pub, 2, DISCOVERY_S), f'logs in {logs}'
            # Warm-up with a photo in which nothing is detected (stamps 1, 2, ... s apart
            # by more than the rate period, so each is described): models loaded, every
            # topic matched. The bag's first frame is then a scene change, as in replay.
            empty = load_sample('astronaut')
            assert first_exchange(pub, lambda t: conv.compressed_msg(
                empty, 'jpeg', t, 'cam'), descriptions, 180, every=5.0) is not None, \
                f'no first description; logs in {logs}'
            time.sleep(2.5)  # past the minimum interval after the warm-up's step
            publish_bag(pub, bag)
            ended = time.monotonic()
            last = T0 + round(max(sb.EXPECTED_STEPS) * 1e9)
            descriptions.wait_for(lambda m: conv.stamp_to_ns(m.header.stamp) >= last, 30)
            # What the graph did while the bag played: once the frames stop, the live
            # node's wake-up timer describes the last frame when the rate falls due
            # (4.25 s after the step at 15.5 s, 2.75 s after the bag's end), a moment the
            # recording - and so its replay - does not have.
            time.sleep(max(0.0, ended + 1.5 - time.monotonic()))
            live_desc = [sb.stamp_s(conv.stamp_to_ns(m.header.stamp))
                         for m in descriptions.snapshot()
                         if conv.stamp_to_ns(m.header.stamp) >= T0]
            live_alerts = [(a.rule, sb.stamp_s(conv.stamp_to_ns(a.header.stamp)))
                           for a in alerts.snapshot()
                           if conv.stamp_to_ns(a.header.stamp) >= T0]
        assert main(['replay', str(bag), '--out', str(tmp_path / 'replay'), '--config',
                     str(cfg), '--no-progress']) == 0
    recs = list(o.iter_results(tmp_path / 'replay' / o.RESULTS))
    replay_desc = [sb.stamp_s(r['stamp_ns']) for r in recs if r['description'] is not None]
    replay_alerts = [(a['rule'], sb.stamp_s(r['stamp_ns'])) for r in recs for a in r['alerts']]
    print(f'\ndescribed frames (s into the bag): live {sorted(live_desc)}, replay '
          f'{sorted(replay_desc)}\nalerts: live {sorted(live_alerts)}\n        replay '
          f'{sorted(replay_alerts)}')
    assert sorted(replay_desc) == sorted(sb.EXPECTED_STEPS)
    assert paired(live_desc, replay_desc), (live_desc, replay_desc)
    for rule in {r for r, _ in live_alerts + replay_alerts}:
        live = [t for r, t in live_alerts if r == rule]
        replayed = [t for r, t in replay_alerts if r == rule]
        assert paired(live, replayed), (rule, live, replayed)
    assert {r for r, _ in replay_alerts} == {'person_anywhere', 'judged_unusual'}
