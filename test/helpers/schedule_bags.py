"""A bag of real photos with scene changes, and a scripted OpenAI-compatible MLLM, for the
tests of the reasoning schedule (replay alone, and the live graph against replay).

The bag shows the shipped photos as a 2 Hz JPEG camera (`SCENES`); the offline detector
(YOLOv3-tiny) sees a different class set in each (camera: persons, coffee: a "toilet",
grace_hopper: a tie, motorcycle: a motorbike), so each switch is a scene change.
`SCHEDULE` puts every threshold a quarter period off the frame grid, so a live run whose
clock jitters by less than that reasons on the same frames as the replay. No tracker
(`DETECTOR`): a live graph's tracker has seen the frames before the bag (a warm-up), a
replay's starts fresh, so their first track ids - and the scene changes new ids make -
would differ for a reason that is not the schedule's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from helpers.replay_bags import NS, T0, image_msg, write_bag
from mr_mllm_ros.core.assets.sample_images import load_sample

TOPIC = '/cam/image/compressed'
PERIOD_S = 0.5
SCENES = [('camera', 12), ('coffee', 3), ('grace_hopper', 10), ('motorcycle', 6),
          ('camera', 4)]
SCHEDULE = {'scene.description_rate_hz': 1 / 4.25, 'scene.describe_on_change': True,
            'scene.min_description_interval_s': 1.75, 'scene.describe_every_frame': False,
            'alerts.mllm_judgement': True, 'alerts.judgement_rate_hz': 1.0,
            # a change is a change at once (no hold on the frame grid a clock jitters on)
            'scene.change_hold_s': 0.0, 'scene.change_track_min_age_s': 0.0}
#: Frame time (s) -> trigger of the steps SCHEDULE makes on SCENES: a change at 0;
#: rate 4.25 s later (4.5); the change at 6.0 waits for 1.75 s after 4.5 (6.5), the one
#: at 7.5 for 1.75 s after 6.5 (8.5); changes at 12.5 and 15.5.
EXPECTED_STEPS = {0.0: 'change', 4.5: 'rate', 6.5: 'change', 8.5: 'change',
                  12.5: 'change', 15.5: 'change'}
DETECTOR = {'tracker.kind': 'none'}
RULES = {'rules': [
    {'name': 'person_anywhere', 'type': 'hazard_in_region', 'severity': 'CRITICAL',
     'debounce': {'n': 1, 'm': 1}, 'cooldown_s': 2.75, 'classes': ['person'],
     'region': [[0, 0], [1, 0], [1, 1], [0, 1]], 'min_score': 0.3, 'anchor': 'any_overlap'},
    {'name': 'judged_unusual', 'type': 'mllm_judgement', 'severity': 'WARN',
     'debounce': {'n': 1, 'm': 1}, 'cooldown_s': 0.0, 'min_probability': 0.7},
]}


def frame_times() -> list[float]:
    return [k * PERIOD_S for k in range(sum(n for _, n in SCENES))]


def write_scene_bag(path: Path) -> Path:
    photos = [name for name, n in SCENES for _ in range(n)]
    msgs = [image_msg(load_sample(name), 'jpeg', T0 + round(t * NS), 'cam')
            for name, t in zip(photos, frame_times())]
    return write_bag(path, 'sqlite3', {TOPIC: msgs}, period_s=PERIOD_S)


def stamp_s(stamp_ns: int) -> float:
    """Bag time of a frame stamp."""
    return round((stamp_ns - T0) / NS, 3)


def mllm_settings(url: str) -> dict:
    """Config keys (dotted) of the scripted MLLM at `url`, the schedule and the rules."""
    return {'mllm.backend': 'openai', 'mllm.openai_base_url': url,
            'mllm.openai_timeout_s': 30.0, **SCHEDULE}


def write_config(tmp: Path, url: str) -> Path:
    """The same settings as a config file for `mr-mllm replay --config`."""
    rules = tmp / 'schedule_rules.yaml'
    rules.write_text(yaml.safe_dump(RULES))
    nested: dict = {}
    for key, value in {**mllm_settings(url), **DETECTOR,
                       'alerts.rules_file': str(rules)}.items():
        section, name = key.split('.')
        nested.setdefault(section, {})[name] = value
    path = tmp / 'schedule_config.yaml'
    path.write_text(yaml.safe_dump(nested))
    return path


def prompt_classes(user_text: str) -> list[str]:
    """The classes of a prompt's object block: scene_v2 (the default) heads each class's
    lines with 'person (2):' and leaves the class out of '<obj0> top left, ...'; scene_v1
    writes '<obj0> person; ...'."""
    return re.findall(r'^(\w[\w ]*) \(\d+\):$', user_text, re.M) or \
        re.findall(r'<obj\d+> (\w[\w ]*?);', user_text)


def script(record):
    """The scripted MLLM: every box is confirmed; the judgement says "unusual" when a
    person or a tie is in view; descriptions cite the first object."""
    from helpers.openai_stub_server import reply
    body = json.dumps(record.json)
    objects = prompt_classes(record.user_text)
    if record.json.get('max_tokens') == 1:
        yes = 'hazard' not in body or bool({'person', 'tie'} & set(objects))
        return reply('yes' if yes else 'no',
                     logprobs=[('yes', -0.05), ('no', -3.0)] if yes else
                     [('no', -0.05), ('yes', -3.0)])
    if 'hazard' in body:
        return reply('yes, someone is in the way')
    if objects:
        return reply('<ground>Something</ground><objects><obj0></objects> is here.')
    return reply('Nothing to see.')
