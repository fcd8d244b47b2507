"""`mr-mllm eval detections|grounding|alerts` on the committed labelled set, and the
numbers of docs/EVALUATION.md (docs/eval/*.json) reproduced by the commands it lists.

Fast tests run the real offline detector (SSD-MobileNet-v2) with --no-mllm; the slow test runs
the real default MLLM (SmolLM2-135M) exactly as the docs do. The referring-expression
protocol is checked with a scripted backend: that checks the plumbing (prompt, forced
prefix, index parsing), not any model's answers."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import LABELS, REPO

from mr_mllm_ros.cli import main
from mr_mllm_ros.core.reasoning.scene import SceneReasoner
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame, Generation, Source
from mr_mllm_ros.eval.tasks import mllm_changes, refer

SET = REPO / 'data' / 'sample_photos'
DOCS = REPO / 'docs' / 'eval'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def same(a, b, path='result'):
    """Nested equality with floats compared to 1e-6 (JSON round trips, BLAS sums)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, abs_tol=1e-6), \
            f'{path}: {a} != {b}'
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f'{path}: keys {set(a) ^ set(b)}'
        for k in a:
            same(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f'{path}: lengths differ'
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f'{path}[{i}]')
    else:
        assert a == b, f'{path}: {a!r} != {b!r}'


def run_eval(capsys, *args):
    assert main(['eval', *args]) == 0
    return capsys.readouterr().out


def documented(name):
    return json.loads((DOCS / f'{name}.json').read_text())


def test_detections_command_prints_table_and_reproduces_the_detector_numbers(
        tmp_path, capsys):
    out = run_eval(capsys, 'detections', '--gt', str(LABELS), '--images', 'samples',
                   '--no-mllm', '--out', str(tmp_path))
    assert '| metric | detector alone | with MLLM reinforcement | MLLM gain |' in out
    assert '| motorcycle | 5 | 5/1/0 |' in out  # 6 photos + 10 crops and composites
    result = json.loads((tmp_path / 'detections.json').read_text())
    assert (tmp_path / 'detections.md').read_text().startswith('| metric |')
    assert (tmp_path / 'detections_pr.png').read_bytes()[:8] == PNG_MAGIC
    assert result['with_mllm'] is None and result['images'] == 16
    # The detector-alone half of docs/eval/detections.json (that run had the MLLM on;
    # `detections` there is the same detector output).
    same(result['detector'], documented('detections')['detector'])


def test_alerts_command_reproduces_the_documented_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the documented command, word for word
    out = run_eval(capsys, 'alerts', '--labels', 'data/sample_photos/alerts.jsonl',
                   '--no-mllm', '--out', str(tmp_path))
    assert '| **overall** |' in out
    result = json.loads((tmp_path / 'alerts.json').read_text())
    assert result['frames'] == 91 and result['clips'] == 10
    same(result['scores'], documented('alerts')['scores'])
    assert (tmp_path / 'alerts.md').read_text() == (DOCS / 'alerts.md').read_text()


def test_grounding_command_without_mllm_reports_the_oracle_only(tmp_path, capsys):
    out = run_eval(capsys, 'grounding', '--data', str(SET / 'referring.jsonl'), '--no-mllm',
                   '--out', str(tmp_path), '--name', 'g')
    s = json.loads((tmp_path / 'g.json').read_text())['referring']['scores']
    assert s['n'] == 17 and s['accuracy'] is None
    # SSD-MobileNet-v2 has a box at IoU >= 0.5 for 14 of the 17 expressions (see the docs;
    # YOLOv3-tiny had 8).
    assert s['reachable'] == documented('grounding')['referring']['scores']['reachable'] == 14
    assert '| oracle: some detection has IoU >= 0.5 (upper bound) | 0.824 |' in out


def test_alerts_from_a_bag(tmp_path, capsys):
    from mr_mllm_ros.core.assets.sample_images import load_sample
    from mr_mllm_ros.eval.datasets import write_bag
    dark = (load_sample('coffee') * 0.02).astype(np.uint8)
    write_bag(tmp_path / 'bag', '/cam/image', [load_sample('coffee')] * 2 + [dark] * 6)
    (tmp_path / 'labels.jsonl').write_text('{"frames": [2, 7], "alerts": ["frame_black"]}\n')
    run_eval(capsys, 'alerts', '--labels', str(tmp_path / 'labels.jsonl'), '--bag',
             str(tmp_path / 'bag'), '--no-mllm', '--out', str(tmp_path))
    r = json.loads((tmp_path / 'alerts.json').read_text())
    black = r['scores']['per_rule']['frame_black']
    # debounce 5 of 5: raised on the 5th dark frame (index 6), 4 frames = 0.4 s late
    assert (black['tp'], black['fp'], black['fn']) == (1, 0, 0)
    assert black['latency_frames']['max'] == 4 and black['latency_s']['max'] == \
        pytest.approx(0.4)


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(['eval', 'detections', '--gt', str(tmp_path / 'none.json'),
                 '--no-mllm']) == 2
    assert 'cannot read ground truth' in capsys.readouterr().err
    assert main(['eval', 'detections', '--gt', str(LABELS), '--set', 'detector.conf']) == 2
    assert 'KEY=VALUE' in capsys.readouterr().err
    (tmp_path / 'l.jsonl').write_text('{"image": "sample:coffee", "alerts": ["typo"]}\n')
    assert main(['eval', 'alerts', '--labels', str(tmp_path / 'l.jsonl'), '--no-mllm']) == 2
    assert "rule(s) typo that the rules file does not have" in capsys.readouterr().err


# ------------------------------------------------------------- referring protocol

class ScriptedMllm:
    """Replies with reply(request) after the forced answer prefix; records requests."""

    name = 'scripted (test double)'
    sees_images = False

    def __init__(self, reply):
        self.reply = reply
        self.requests = []

    def generate(self, request):
        self.requests.append(request)
        return Generation(text=request.answer_prefix + self.reply(request))

    def yes_probability(self, requests):
        return [0.5] * len(requests)

    def count_tokens(self, text):
        return len(text.split())

    def close(self):
        pass


def _scene(default_config, reply):
    backend = ScriptedMllm(reply)
    return SimpleNamespace(scene=SimpleNamespace(
        reasoner=SceneReasoner(default_config, backend))), backend


DS = DetectionSet((Detection(0, 'person', 0.9, Box(0, 0, 50, 100)),
                   Detection(56, 'chair', 0.6, Box(60, 50, 100, 100))), 100, 100)
FRAME = Frame(np.zeros((100, 100, 3), np.uint8), 0, 'f')


def test_retrieval_forces_the_phrase_and_reads_the_index(default_config):
    pipe, backend = _scene(default_config, lambda r: '1></objects>')
    assert refer(pipe, FRAME, DS, 'the chair <obj0>') == [1]
    req = backend.requests[-1]
    # the expression is data: no markup of its own gets into the prompt
    assert req.answer_prefix == '<ground>the chair (obj0)</ground><objects><obj'
    assert req.allowed_indices == frozenset({0, 1}) and req.task == 'answer'
    assert 'Which object is the chair (obj0)?' in req.user
    pipe, _ = _scene(default_config, lambda r: '1><obj0></objects>')
    assert refer(pipe, FRAME, DS, 'x') == [1, 0]
    pipe, _ = _scene(default_config, lambda r: '7></objects>')  # not a listed object
    assert refer(pipe, FRAME, DS, 'x') == []
    pipe, backend = _scene(default_config, lambda r: '0>')
    assert refer(pipe, FRAME, DS.with_detections(()), 'x') == []
    assert backend.requests == []  # nothing to choose from: the model is not asked


def test_question_protocol_takes_the_cited_objects(default_config):
    pipe, backend = _scene(default_config, lambda r: '<ground>The chair</ground><objects>'
                                                     '<obj1></objects> at the right.')
    assert refer(pipe, FRAME, DS, 'the seat', 'question') == [1]
    assert backend.requests[-1].answer_prefix == ''


def test_mllm_changes_in_words():
    raw = DS
    refined = DS.with_detections((
        DS[0].replace(score=0.95, verified=True, original_score=0.9),
        Detection(-1, 'forklift', 0.5, Box(1, 1, 2, 2), source=Source.MLLM)))
    assert mllm_changes(raw, refined) == ['rejected chair 0.60', 'verified person 0.90 -> 0.95',
                                          'added forklift 0.50']
    relabelled = DS.with_detections((DS[0], DS[1].replace(class_name='stool',
                                                          original_class_name='chair')))
    assert mllm_changes(raw, relabelled) == ['relabelled chair -> stool']


@pytest.mark.slow
def test_documented_detection_numbers_with_mllm_reproduce(tmp_path, capsys):
    """The exact command of docs/EVALUATION.md with the real default MLLM."""
    run_eval(capsys, 'detections', '--gt', str(LABELS), '--images', 'samples',
             '--out', str(tmp_path))
    got = json.loads((tmp_path / 'detections.json').read_text())
    same(got['with_mllm'], documented('detections')['with_mllm'])
    same(got['detector'], documented('detections')['detector'])


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~1 min alone; minutes when the CPUs are shared
def test_documented_grounding_numbers_reproduce(tmp_path, capsys):
    run_eval(capsys, 'grounding', '--data', str(SET / 'referring.jsonl'),
             '--out', str(tmp_path))
    got = json.loads((tmp_path / 'grounding.json').read_text())
    doc = documented('grounding')
    same(got['referring']['scores'], doc['referring']['scores'])
    same([r['cited'] for r in got['referring']['samples']],
         [r['cited'] for r in doc['referring']['samples']])
    same(got['descriptions'], doc['descriptions'])
