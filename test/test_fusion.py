"""Shared-query fusion adapter (core.fusion): module shapes, save/load, refusal of
checkpoints from another config, the data format, the toy generator and the converters.

Random-weight adapters only: these tests check shapes, round trips and error messages,
not what a trained adapter knows (test_fusion_train.py trains one; benchmarks/
fusion_toy.py measures one on SmolLM2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mr_mllm_ros.core.errors import ConfigError, ModelLoadError
from mr_mllm_ros.core.fusion import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterConfig,
    Featurizer,
    SharedQueryFusion,
    check_fits_llm,
    load_adapter,
    parameter_count,
    save_adapter,
    sine_box_embedding,
)
from mr_mllm_ros.core.fusion import data as fusion_data
from mr_mllm_ros.core.types import Box, Detection, DetectionSet


class _Tok:
    """Stand-in tokenizer: one id per character (enough for the featurizer)."""

    def __call__(self, text, add_special_tokens=False):
        return {'input_ids': [ord(c) % 97 for c in text]}


def _featurizer(config: AdapterConfig) -> Featurizer:
    torch.manual_seed(1)
    embedding = torch.nn.Embedding(97, config.llm_hidden)
    torch.nn.init.normal_(embedding.weight, std=0.135)   # like SmolLM2's embeddings
    return Featurizer(config, _Tok(), embedding)


def _scene_batch(config: AdapterConfig, n_frames: int = 2):
    scenes = fusion_data.toy_scenes(n_frames, seed=3)
    return _featurizer(config).build([s.image for s in scenes], [s.detections for s in scenes])


# ------------------------------------------------------------------ module

def test_forward_shapes_and_size_for_smollm2_width():
    config = AdapterConfig(llm_hidden=576, num_queries=8, output_rms=0.135)
    module = SharedQueryFusion(config).eval()
    batch = _scene_batch(config, 3)
    n = batch.scores.shape[1]
    assert batch.boxes.shape == (3, n, 4) and batch.crops.shape == (3, n, 3, 32, 32)
    assert batch.names.shape == (3, n, 576) and batch.object_mask.any(1).all()
    with torch.no_grad():
        out = module(batch)
    assert out.soft_tokens.shape == (3, 4 + 8, 576)          # H hint + K scene tokens
    assert out.rescore_logits.shape == (3, n)
    # soft tokens start at the scale of the LLM's own embeddings
    assert float(out.soft_tokens.pow(2).mean().sqrt()) == pytest.approx(0.135, rel=0.05)
    assert parameter_count(module) < 5_000_000  # "a few M params at most"


def test_object_colour_reaches_the_soft_tokens_before_training():
    """Same detections, the object recoloured: the untrained adapter's scene tokens already
    differ (the direct RoI read-out path), and the crop's colour moments see the change."""
    from mr_mllm_ros.core.fusion import CropEncoder
    config = AdapterConfig(llm_hidden=64, num_queries=4, dim=32, heads=2, output_rms=0.135)
    module = SharedQueryFusion(config).eval()
    spec = fusion_data.ToySpec(min_objects=1, max_objects=1, false_positive_rate=0.0,
                               noise=0.0)
    scene = fusion_data.toy_scenes(1, seed=4, spec=spec)[0]
    image = scene.image.copy()
    box = scene.detections[0].box
    cx, cy = int((box.x1 + box.x2) / 2), int((box.y1 + box.y2) / 2)
    centre = tuple(int(v) for v in image[cy, cx])
    recoloured = image.copy()
    recoloured[(image == centre).all(-1)] = (255 - np.array(centre)).astype(np.uint8)
    feat = _featurizer(config)
    batch = feat.build([image, recoloured], [scene.detections] * 2, None, [{0}, {0}])
    moments = CropEncoder.colour_moments(batch.crops[:, 0])
    assert not torch.allclose(moments[0, :3], moments[1, :3], atol=0.05)   # centre colour
    with torch.no_grad():
        soft = module(batch).soft_tokens[:, config.hint_tokens:]              # (2, K, D)
    spread = (soft[0] - soft[1]).norm() / soft[0].norm()
    assert spread > 0.01, f'appearance barely reaches the soft tokens ({float(spread):.4f})'


def test_a_question_that_names_objects_reads_only_those():
    """Instruction-aware read-out: "what colour is <obj1>?" -> every scene token reads
    <obj1> alone; a request naming none (a description) reads every object."""
    config = AdapterConfig(llm_hidden=64, num_queries=4, dim=32, heads=2, output_rms=0.135)
    module = SharedQueryFusion(config).eval()
    spec = fusion_data.ToySpec(min_objects=3, max_objects=3, false_positive_rate=0.0)
    scene = fusion_data.toy_scenes(1, seed=5, spec=spec)[0]
    feat = _featurizer(config)
    batch = feat.build([scene.image] * 2, [scene.detections] * 2, None, [{1}, set()])
    with torch.no_grad():
        w = module(batch).readout                                             # (2, K, N)
    named = batch.indices[0].index(1)
    others = [j for j, i in enumerate(batch.indices[0]) if i >= 0 and j != named]
    assert (w[0, :, others] == 0).all() and (w[0, :, named] > 0).all()
    assert (w[1, :, others] > 0).all()
    unmasked = SharedQueryFusion(AdapterConfig(**{**config.to_dict(),
                                                  'focus_readout': False})).eval()
    with torch.no_grad():
        assert (unmasked(batch).readout[0, :, others] > 0).all()  # the bias alone


def test_the_read_out_keeps_its_share_when_the_summary_path_grows():
    """readout_share: the summary path (out_proj of the queries) grown 50x, as training
    grew it on the toy's failing seed, leaves the scene tokens of questions about
    different objects still different; with the plain sum (share 0) they become the same
    constant and the asked object's look is gone."""
    config = AdapterConfig(llm_hidden=64, num_queries=4, dim=32, heads=2, output_rms=0.135)
    spec = fusion_data.ToySpec(min_objects=4, max_objects=4, false_positive_rate=0.0)
    scene = fusion_data.toy_scenes(1, seed=5, spec=spec)[0]
    batch = _featurizer(config).build([scene.image] * 4, [scene.detections] * 4, None,
                                      [{0}, {1}, {2}, {3}])   # one question per object

    def varying_part(share: float) -> float:
        torch.manual_seed(0)
        module = SharedQueryFusion(AdapterConfig(**{**config.to_dict(),
                                                    'readout_share': share})).eval()
        with torch.no_grad():
            module.out_proj.weight.mul_(50.0)
            module.out_proj.bias.fill_(0.5)           # and a constant part
            scene_tokens = module(batch).soft_tokens[:, config.hint_tokens:]  # (4, K, D)
        spread = (scene_tokens - scene_tokens.mean(0)).pow(2).mean().sqrt()
        return float(spread / scene_tokens.pow(2).mean().sqrt())

    shared, plain = varying_part(0.5), varying_part(0.0)
    assert shared > 0.2, shared
    assert plain < 0.05, plain
    with pytest.raises(ValueError, match='readout_share'):
        AdapterConfig(llm_hidden=64, readout_share=1.5)


def test_vision_tokens_and_vision_rois():
    config = AdapterConfig(llm_hidden=64, num_queries=4, dim=32, heads=2, vision_dim=48,
                           roi_source='vision')
    scenes = fusion_data.toy_scenes(2, seed=5)

    def vision_fn(images):   # (M, D_v) tokens and a (D_v, 6, 6) map per image
        return [(torch.randn(9 + i, 48), torch.randn(48, 6, 6)) for i in range(len(images))]
    feat = Featurizer(config, _Tok(), torch.nn.Embedding(97, 64), vision_fn)
    batch = feat.build([s.image for s in scenes], [s.detections for s in scenes])
    assert batch.vision.shape == (2, 10, 48) and batch.vision_mask.sum().item() == 19
    assert batch.rois.shape[2:] == (48, 4, 4) and batch.crops is None
    out = SharedQueryFusion(config)(batch)
    assert out.soft_tokens.shape == (2, 4 + 4, 64)


def test_frame_without_objects_still_gives_soft_tokens():
    config = AdapterConfig(llm_hidden=64, num_queries=4, dim=32, heads=2)
    ds = DetectionSet((), 96, 96)
    batch = _featurizer(config).build([np.zeros((96, 96, 3), np.uint8)], [ds])
    out = SharedQueryFusion(config)(batch)
    assert torch.isfinite(out.soft_tokens).all() and batch.indices == [[-1]]


def test_objects_enter_by_score_up_to_max_objects():
    config = AdapterConfig(llm_hidden=64, num_queries=4, dim=32, heads=2, max_objects=2)
    dets = tuple(Detection(0, 'cup', s, Box(1, 1, 20, 20)) for s in (0.3, 0.9, 0.5))
    batch = _featurizer(config).build([np.zeros((32, 32, 3), np.uint8)],
                                      [DetectionSet(dets, 32, 32)])
    assert batch.indices == [[1, 2]]
    assert batch.scores[0].tolist() == pytest.approx([0.9, 0.5])


def test_sine_box_embedding():
    emb = sine_box_embedding(torch.tensor([[0.0, 0.5, 1.0, 0.25]]), 8)
    assert emb.shape == (1, 64) and float(emb.abs().max()) <= 1.0


def test_bad_adapter_config_is_refused():
    with pytest.raises(ValueError, match='roi_source'):
        AdapterConfig(llm_hidden=64, roi_source='magic')
    with pytest.raises(ValueError, match='multiple of heads'):
        AdapterConfig(llm_hidden=64, dim=30, heads=4)


# ------------------------------------------------------------------ save / load

def test_save_load_gives_identical_soft_tokens(tmp_path):
    config = AdapterConfig(llm_hidden=64, num_queries=6, dim=32, heads=2, llm='tiny')
    torch.manual_seed(0)
    module = SharedQueryFusion(config).eval()
    batch = _scene_batch(config)
    before = module(batch)
    save_adapter(module, tmp_path / 'a', info={'note': 'test'})
    assert (tmp_path / 'a' / WEIGHTS_FILE).is_file()
    meta = json.loads((tmp_path / 'a' / CONFIG_FILE).read_text())
    assert meta['config']['num_queries'] == 6 and meta['info'] == {'note': 'test'}
    loaded = load_adapter(tmp_path / 'a')
    after = loaded(batch)
    assert torch.equal(before.soft_tokens, after.soft_tokens)
    assert torch.equal(before.rescore_logits, after.rescore_logits)
    assert loaded.config == config


def test_checkpoint_from_another_config_names_both_shapes(tmp_path):
    config = AdapterConfig(llm_hidden=64, num_queries=8, dim=32, heads=2)
    save_adapter(SharedQueryFusion(config), tmp_path / 'k8')
    # wrong K
    with pytest.raises(ModelLoadError) as e:
        load_adapter(tmp_path / 'k8', expected=AdapterConfig(llm_hidden=64, num_queries=4,
                                                             dim=32, heads=2))
    assert '(12, 64)' in str(e.value) and '(8, 64)' in str(e.value)   # 4 hint + K
    assert 'num_queries: checkpoint 8 vs config 4' in str(e.value)
    # wrong width
    with pytest.raises(ModelLoadError) as e:
        load_adapter(tmp_path / 'k8', expected=AdapterConfig(llm_hidden=576, num_queries=8,
                                                             dim=32, heads=2))
    assert '(12, 64)' in str(e.value) and '(12, 576)' in str(e.value)
    # an LLM of another width
    with pytest.raises(ModelLoadError) as e:
        check_fits_llm(config, 576, 'k8', vision_dim=None)
    assert '(12, 64)' in str(e.value) and '(12, 576)' in str(e.value)


def test_weights_that_do_not_match_their_json_are_refused(tmp_path):
    save_adapter(SharedQueryFusion(AdapterConfig(llm_hidden=64, num_queries=8, dim=32,
                                                 heads=2)), tmp_path / 'a')
    meta = json.loads((tmp_path / 'a' / CONFIG_FILE).read_text())
    meta['config']['num_queries'] = 5   # hand-edited json
    (tmp_path / 'a' / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r'queries: checkpoint \(8, 32\) vs model \(5, 32\)'):
        load_adapter(tmp_path / 'a')


def test_missing_or_foreign_adapter_folder(tmp_path):
    with pytest.raises(ModelLoadError, match='adapter.json'):
        load_adapter(tmp_path / 'nothing')
    (tmp_path / 'x').mkdir()
    (tmp_path / 'x' / CONFIG_FILE).write_text(json.dumps({'format': 'other'}))
    with pytest.raises(ModelLoadError, match='format'):
        load_adapter(tmp_path / 'x')


def test_vision_adapter_needs_a_vision_backend():
    config = AdapterConfig(llm_hidden=64, vision_dim=64)
    with pytest.raises(ModelLoadError, match='no vision tower'):
        check_fits_llm(config, 64, 'a', vision_dim=None)
    with pytest.raises(ModelLoadError, match='width 64, this backend gives width 32'):
        check_fits_llm(config, 64, 'a', vision_dim=32)
    with pytest.raises(ModelLoadError, match='feature map'):
        check_fits_llm(AdapterConfig(llm_hidden=64, vision_dim=64, roi_source='vision'), 64,
                       'a', vision_dim=64, family='idefics3')


# ------------------------------------------------------------------ toy data

def test_toy_answers_need_appearance():
    """Colour and size are in the pixels, not in the perception prompt: the boxes'
    sizes do not tell big from small, and the object's centre pixel has its colour."""
    scenes = fusion_data.toy_scenes(60, seed=11)
    box_side = {'big': [], 'small': []}
    for scene in scenes:
        ds = scene.detections
        assert len(scene.correct) == len(ds)
        for qa in scene.qas:
            i = int(qa.question.split('<obj')[1].split('>')[0])
            assert scene.correct[i] is True
            if qa.kind == 'size':
                box_side[qa.answer.split()[-1]].append(ds[i].box.width)
            else:
                assert qa.answer in qa.choices and len(qa.choices) == len(fusion_data.COLOURS)
                assert qa.answer == f'<obj{i}> is {qa.answer.split()[-1]}'
    big, small = np.mean(box_side['big']), np.mean(box_side['small'])
    assert abs(big - small) / small < 0.1, (big, small)
    assert sum(not c for s in scenes for c in s.correct) > 5   # false positives exist


def test_toy_is_reproducible_and_seeds_differ():
    a, b = fusion_data.toy_scenes(3, seed=1), fusion_data.toy_scenes(3, seed=1)
    assert all(np.array_equal(x.image, y.image) and x.qas == y.qas for x, y in zip(a, b))
    c = fusion_data.toy_scenes(3, seed=2)
    assert not np.array_equal(a[0].image, c[0].image)


def test_jsonl_round_trip(tmp_path):
    scenes = fusion_data.toy_scenes(4, seed=7)
    path = fusion_data.write_jsonl(scenes, tmp_path)
    back = fusion_data.read_jsonl(path)
    assert [s.id for s in back] == [s.id for s in scenes]
    for x, y in zip(scenes, back):
        assert np.array_equal(x.image, y.load_image())
        assert [d.class_name for d in x.detections] == [d.class_name for d in y.detections]
        assert x.correct == y.correct
        assert x.qas == y.qas


def test_jsonl_errors_name_the_line(tmp_path):
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('{"image": "a.png", "conversation": [{"role": "assistant", "content": "x"}]}\n')
    with pytest.raises(ConfigError, match='bad.jsonl:1'):
        fusion_data.read_jsonl(bad)
    bad.write_text('{"image": "a.png", "detections": [{"score": 1}], "width": 4, "height": 4,'
                   ' "conversation": [{"role": "user", "content": "q"},'
                   ' {"role": "assistant", "content": "a"}]}\n')
    with pytest.raises(ConfigError, match='"class" and "box"'):
        fusion_data.read_jsonl(bad)


def test_records_without_detections_get_the_detector(tmp_path):
    (tmp_path / 'd.jsonl').write_text(json.dumps({
        'image': 'img.png', 'conversation': [{'role': 'user', 'content': 'q?'},
                                             {'role': 'assistant', 'content': 'a'}]}) + '\n')
    import cv2
    cv2.imwrite(str(tmp_path / 'img.png'), np.zeros((20, 30, 3), np.uint8))
    scenes = fusion_data.read_jsonl(tmp_path / 'd.jsonl')
    assert scenes[0].detections is None

    class FakeDetector:
        def detect(self, frame):
            return DetectionSet((Detection(1, 'cup', 0.8, Box(1, 2, 10, 12)),), frame.width,
                                frame.height)
    assert fusion_data.fill_detections(scenes, FakeDetector()) == 1
    assert scenes[0].detections[0].class_name == 'cup' and scenes[0].correct == (None,)


def _coco_files(tmp_path: Path):
    images = [{'id': 1, 'file_name': 'a.jpg', 'width': 64, 'height': 48},
              {'id': 2, 'file_name': 'b.jpg', 'width': 32, 'height': 32}]
    cats = [{'id': 1, 'name': 'person'}, {'id': 18, 'name': 'dog'}]
    anns = [{'id': 10, 'image_id': 1, 'category_id': 1, 'bbox': [1, 2, 10, 20], 'iscrowd': 0},
            {'id': 11, 'image_id': 1, 'category_id': 18, 'bbox': [30, 5, 20, 30], 'iscrowd': 0},
            {'id': 12, 'image_id': 2, 'category_id': 18, 'bbox': [0, 0, 5, 5], 'iscrowd': 1}]
    (tmp_path / 'instances.json').write_text(json.dumps(
        {'images': images, 'categories': cats, 'annotations': anns}))
    (tmp_path / 'captions.json').write_text(json.dumps(
        {'images': images, 'annotations': [
            {'image_id': 1, 'id': 1, 'caption': 'A man  and a dog.\n'},
            {'image_id': 1, 'id': 2, 'caption': 'A dog next to a man.'},
            {'image_id': 2, 'id': 3, 'caption': 'An empty room.'}]}))
    (tmp_path / 'refs.json').write_text(json.dumps([
        {'image_id': 1, 'ann_id': 11, 'split': 'train',
         'sentences': [{'sent': 'the dog on the right'}, {'sent': 'brown  dog'}]},
        {'image_id': 1, 'ann_id': 10, 'split': 'val', 'sentences': ['left man']},
        {'image_id': 2, 'ann_id': 12, 'split': 'train', 'sentences': ['crowd']}]))


def test_coco_captions_converter(tmp_path):
    _coco_files(tmp_path)
    n = fusion_data.convert_coco_captions(tmp_path / 'captions.json', tmp_path / 'images',
                                          tmp_path / 'out.jsonl', tmp_path / 'instances.json',
                                          captions_per_image=2)
    assert n == 2
    recs = [json.loads(x) for x in (tmp_path / 'out.jsonl').read_text().splitlines()]
    assert recs[0]['conversation'] == [
        {'role': 'user', 'content': fusion_data.DESCRIBE_QUESTION},
        {'role': 'assistant', 'content': 'A man and a dog.', 'type': 'caption'},
        {'role': 'user', 'content': fusion_data.DESCRIBE_QUESTION},
        {'role': 'assistant', 'content': 'A dog next to a man.', 'type': 'caption'}]
    assert [d['class'] for d in recs[0]['detections']] == ['person', 'dog']
    assert recs[0]['detections'][1]['box'] == [30, 5, 50, 35]
    assert recs[1]['detections'] == []                      # crowd boxes are skipped
    scenes = fusion_data.read_jsonl(tmp_path / 'out.jsonl')  # readable without the images
    assert len(scenes[0].detections) == 2 and len(scenes[0].qas) == 2
    # without instances: no detections (the detector runs at training time)
    fusion_data.convert_coco_captions(tmp_path / 'captions.json', tmp_path / 'images',
                                      tmp_path / 'plain.jsonl', limit=1)
    rec = json.loads((tmp_path / 'plain.jsonl').read_text())
    assert 'detections' not in rec and rec['image'].endswith('a.jpg')


def test_refcoco_converter(tmp_path):
    _coco_files(tmp_path)
    n = fusion_data.convert_refcoco(tmp_path / 'refs.json', tmp_path / 'instances.json',
                                    tmp_path / 'images', tmp_path / 'out.jsonl')
    assert n == 1  # image 2 has only a crowd box
    rec = json.loads((tmp_path / 'out.jsonl').read_text())
    qas = [(t['content']) for t in rec['conversation']]
    assert qas[:4] == ['Which object is the dog on the right?', '<obj1>',
                       'Which object is brown dog?', '<obj1>']
    assert qas[4:] == ['Which object is left man?', '<obj0>']
    assert rec['conversation'][1]['choices'] == ['<obj0>', '<obj1>']
    fusion_data.convert_refcoco(tmp_path / 'refs.json', tmp_path / 'instances.json',
                                tmp_path / 'images', tmp_path / 'val.jsonl', split='val')
    rec = json.loads((tmp_path / 'val.jsonl').read_text())
    assert len(rec['conversation']) == 2
    scene = fusion_data.read_jsonl(tmp_path / 'val.jsonl')[0]
    assert scene.qas[0].answer == '<obj0>' and scene.qas[0].kind == 'referring'


# ------------------------------------------------------------------ prompts

def test_soft_token_placeholder_in_prompts():
    from mr_mllm_ros.core.config import load_config
    from mr_mllm_ros.core.mllm.backend import SOFT_TOKENS_MARKER
    from mr_mllm_ros.core.reasoning.prompts import PromptBuilder, load_template
    config = load_config()
    ds = fusion_data.toy_scenes(1, seed=1)[0].detections
    fused = PromptBuilder(load_template('scene_fusion_v1'), config.mllm, len, False)
    req = fused.answer(ds, 'What colour is <obj0>?', soft_tokens=torch.zeros(8, 4))
    assert req.user.count(SOFT_TOKENS_MARKER) == 1 and req.soft_tokens is not None
    assert req.user.index('Objects:') < req.user.index(SOFT_TOKENS_MARKER) \
        < req.user.index('Question:')
    plain = fused.answer(ds, 'What colour is <obj0>?')
    assert SOFT_TOKENS_MARKER not in plain.user and 'Appearance' not in plain.user
    assert plain.soft_tokens is None
    v1 = PromptBuilder(load_template('scene_v1'), config.mllm, len, False)
    assert v1.answer(ds, 'q').soft_tokens is None
    with pytest.raises(ConfigError, match='no {soft_tokens} field'):
        v1.describe(ds, soft_tokens=torch.zeros(8, 4))
    # users cannot write the marker: questions are sanitised of '<' and '>'
    evil = fused.answer(ds, f'say {SOFT_TOKENS_MARKER}')
    assert SOFT_TOKENS_MARKER not in evil.user


# ------------------------------------------------------------------ command line

def test_cli_makes_toy_data_and_converts(tmp_path):
    from mr_mllm_ros.cli import main
    assert main(['train-fusion', '--make-toy', '5', '--out', str(tmp_path / 'toy'),
                 '--seed-data', '4']) == 0
    assert len(fusion_data.read_jsonl(tmp_path / 'toy' / 'data.jsonl')) == 5
    _coco_files(tmp_path)
    assert main(['train-fusion', '--from-refcoco', str(tmp_path / 'refs.json'), '--instances',
                 str(tmp_path / 'instances.json'), '--images', str(tmp_path / 'images'),
                 '--out', str(tmp_path / 'ref')]) == 0
    assert (tmp_path / 'ref' / 'data.jsonl').is_file()
    assert main(['train-fusion', '--from-coco-captions', str(tmp_path / 'captions.json'),
                 '--images', str(tmp_path / 'images'), '--out', str(tmp_path / 'cap')]) == 0
    assert main(['train-fusion', '--from-refcoco', str(tmp_path / 'refs.json'), '--images',
                 str(tmp_path / 'images'), '--out', str(tmp_path / 'x')]) == 2  # no --instances
