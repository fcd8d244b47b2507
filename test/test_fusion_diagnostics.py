"""The fusion diagnostic (core.fusion.diagnostics): linear probes that tell a feature that
does not carry colour or size from an optimisation that did not teach the LLM to read it.

Verified here: the probe scores 1.0 on separable features and chance on labels that do
not depend on them; on the toy scenes the crop RoI feature of an untrained adapter
already carries colour (its colour moments), so a colour failure after training is not
the feature; the soft tokens and the scene share are read per question."""

from __future__ import annotations

import pytest
import torch

from mr_mllm_ros.core.fusion.data import ToySpec, toy_scenes
from mr_mllm_ros.core.fusion.diagnostics import diagnose, probe_accuracy, probe_features
from mr_mllm_ros.core.fusion.train import Trainer

from test_fusion_train import llm_config, models, train_config  # noqa: F401  (fixture)


def test_probe_reads_separable_features_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    labels = ['red', 'green', 'blue'] * 40
    centre = {'red': torch.tensor([3.0, 0, 0]), 'green': torch.tensor([0, 3.0, 0]),
              'blue': torch.tensor([0, 0, 3.0])}
    x = torch.stack([centre[y] for y in labels]) + torch.randn(120, 3, generator=gen) * 0.3
    x = torch.cat([x, torch.randn(120, 13, generator=gen)], 1)   # plus uninformative dims
    assert probe_accuracy(x[:80], labels[:80], x[80:], labels[80:]) == 1.0
    noise = torch.randn(120, 16, generator=gen)
    assert probe_accuracy(noise[:80], labels[:80], noise[80:], labels[80:]) < 0.6


@pytest.fixture(scope='module')
def trainer(models):  # noqa: F811
    return Trainer(llm_config(models), train_config(models))


def test_features_come_per_question_with_the_answer_as_label(trainer):
    scenes = toy_scenes(4, seed=7, spec=ToySpec(colours=('red', 'purple')))
    roi, soft = probe_features(trainer, scenes)
    questions = {kind: sum(qa.kind == kind for s in scenes for qa in s.qas)
                 for kind in ('colour', 'size')}
    for kind in questions:
        assert len(soft[kind]) == questions[kind] == len(roi[kind])
    assert {y for _, y in roi['colour']} <= {'red', 'purple'}
    assert {y for _, y in soft['size']} <= {'big', 'small'}
    k = trainer.adapter_config.num_queries * trainer.adapter_config.llm_hidden
    assert soft['colour'][0][0].shape == (k,)       # the K scene tokens, hints left out
    assert roi['size'][0][0].shape == (trainer.adapter_config.roi_dim,)


def test_an_untrained_crop_feature_already_carries_colour(trainer):
    spec = ToySpec(colours=('red', 'green', 'blue', 'purple'))
    result = diagnose(trainer, toy_scenes(60, seed=1, spec=spec),
                      toy_scenes(30, seed=2, spec=spec))
    assert result['probe_roi']['colour'] >= 0.9, result
    assert set(result['probe_soft']) == {'colour', 'size'}
    assert 0.0 < result['scene_share'] <= 1.0
