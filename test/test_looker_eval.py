"""`mr-mllm eval looker`: how a detector box is judged against the labels before and after
the reasoning step, and the command on the labelled package photos."""

import json

from mr_mllm_ros.cli import main
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Source
from mr_mllm_ros.eval.looker_gain import box_truth, outcome, what_happened
from mr_mllm_ros.eval.metrics import Obj

GTS = [Obj(1, 'cup', (0, 0, 100, 100)), Obj(1, 'person', (200, 0, 300, 200)),
       Obj(1, 'bicycle', (400, 0, 500, 100), ignore=True)]


def test_box_truth():
    assert box_truth((5, 5, 100, 100), 'cup', GTS) == ('right', '')
    assert box_truth((5, 5, 100, 100), 'toilet', GTS) == ('wrong_class', 'cup')
    assert box_truth((600, 0, 700, 100), 'cup', GTS) == ('false', '')
    assert box_truth((410, 10, 490, 90), 'car', GTS) == ('dont_care', '')


def test_what_happened_and_the_outcome():
    raw = Detection(61, 'toilet', 0.4, Box(5, 5, 100, 100))
    twin = Detection(41, 'cup', 0.9, Box(5, 5, 100, 100))  # the same box, another class

    def refined(*dets):
        return DetectionSet(tuple(dets), 640, 480)
    relabelled = raw.replace(class_name='cup', original_class_name='toilet')
    assert what_happened(raw, refined(twin, relabelled)) == ('relabelled', 'cup')
    assert what_happened(raw, refined(twin)) == ('rejected', '')
    named = raw.replace(class_name='espresso', source=Source.LOOKER,
                        original_class_name='toilet')
    assert what_happened(raw, refined(named)) == ('named', 'espresso')
    assert what_happened(twin, refined(twin.replace(verified=True))) == ('verified', 'cup')
    assert outcome('wrong_class', 'cup', 'relabelled', 'cup') == 'fixed'
    assert outcome('wrong_class', 'cup', 'relabelled', 'bowl') == 'still_wrong'
    assert outcome('false', '', 'named', 'tripod') == 'fixed'
    assert outcome('right', '', 'rejected', '') == 'broken'
    assert outcome('right', '', 'verified', 'cup') == 'confirmed'
    assert outcome('dont_care', '', 'rejected', '') == 'dont_care'


def test_the_command_on_the_package_photos(tmp_path, capsys):
    assert main(['eval', 'looker', '--gt', 'data/sample_photos/instances.json', '--set',
                 'mllm.backend=template', '--limit', '3', '--out', str(tmp_path)]) == 0
    result = json.loads((tmp_path / 'looker.json').read_text())
    assert result['images'] == 3 and result['boxes'] == len(result['boxes_detail'])
    assert result['right_broken'] == 0 and result['right_verified'] >= 2
    assert result['timing']['looker']['p50'] > 0
    assert 'Looker reinforcement gain on 3 photos' in capsys.readouterr().out
