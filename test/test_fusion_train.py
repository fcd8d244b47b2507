"""Training the shared-query fusion adapter (core.fusion.train) on toy scenes.

What is verified: with the LLM frozen, 50 AdamW steps on the toy data halve the training
loss (the adapter learns to steer the LLM from pixels it cannot read in the prompt);
a trained adapter saved and loaded gives identical soft tokens and identical greedy
output through the run-time path (SceneReasoner); resuming from a checkpoint continues
the same run; VLM backends train through the same loop; the CLI writes data and trains.

The CI LLM is a tiny RANDOM model (1 layer, weights drawn with std 0.3 instead of 0.02,
the committed tiny tokenizer, a one-line prompt template): with the usual 0.02 init a
random LLM's logits hardly depend on its input (their spread is ~0.2 nats), so nothing an
adapter feeds it could halve the loss; larger weights make the random LLM steerable. The
test shows the adapter learns to steer; it says nothing about language: the real
measurement is benchmarks/fusion_toy.py with SmolLM2-135M.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.errors import ModelLoadError
from mr_mllm_ros.core.fusion import load_adapter, mentioned_objects
from mr_mllm_ros.core.fusion.data import toy_scenes, write_jsonl
from mr_mllm_ros.core.fusion.train import TrainConfig, Trainer
from mr_mllm_ros.core.reasoning.scene import SceneReasoner
from mr_mllm_ros.core.types import Frame

# A one-line-per-part template: the random LLM's attention is spread over every prompt
# token, so a short prompt leaves the soft tokens a larger share.
MINI_TEMPLATE = '''version: fusion_test_mini
vision: {image: "", text_only: ""}
object_line: "<obj{index}> {class_name}"
no_objects: "none"
tags: ""
tasks:
  describe: {system: "Describe.", user: "{objects}\\n{soft_tokens}\\nDescribe.", answer_prefix: ""}
  answer: {system: "Answer.", user: "{objects}\\n{soft_tokens}\\n{question}", answer_prefix: ""}
  verify: {system: "Check.", user: "{objects}\\n{soft_tokens}\\n<obj{index}>?"}
  judge: {system: "Judge.", user: "{objects}\\n{soft_tokens}\\nHazard?"}
  label: {system: "Name.", user: "{objects}\\n{soft_tokens}\\n<obj{index}>?"}
'''
ADAPTER = dict(num_queries=8, dim=64, heads=2)


from helpers import make_tiny_models as maker  # noqa: E402


@pytest.fixture(scope='module')
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('fusion_train')
    out = {'llm': maker.make_llm(root / 'llm', num_hidden_layers=1, initializer_range=0.3)}
    out.update(maker.make_all(root, ('qwen2_vl', 'idefics3')))
    (root / 'mini.yaml').write_text(MINI_TEMPLATE)
    out['template'] = root / 'mini.yaml'
    return out


def llm_config(models, **overrides):
    values = {'mllm.backend': 'transformers_llm', 'mllm.model': str(models['llm']),
              'mllm.device': 'cpu', 'mllm.max_new_tokens': 8}
    values.update(overrides)
    return load_config(overrides=values)


def train_config(models, **overrides) -> TrainConfig:
    values = dict(steps=50, scenes_per_step=4, questions_per_scene=8, lr=5e-3, warmup_steps=5,
                  min_lr_ratio=1.0, eval_every=0, eval_scenes=4, save_every=0,
                  prompt_template=str(models['template']), adapter=dict(ADAPTER))
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope='module')
def trained(models, tmp_path_factory):
    """50 steps on 8 toy scenes (the CI acceptance run)."""
    out = tmp_path_factory.mktemp('adapter')
    trainer = Trainer(llm_config(models), train_config(models))
    scenes = toy_scenes(8, seed=1)
    result = trainer.run(scenes, out, eval_scenes=toy_scenes(4, seed=2), progress=False)
    return trainer, result, scenes, out


def test_fifty_steps_halve_the_training_loss(trained):
    trainer, result, _, out = trained
    losses = result.losses
    assert len(losses) == 50
    first, last = losses[0], sum(losses[-5:]) / 5
    assert last <= 0.5 * first, (first, last, losses)
    assert not any(p.requires_grad for p in trainer.backend.model.parameters())  # LLM frozen
    log = [json.loads(x) for x in (out / 'metrics.jsonl').read_text().splitlines()]
    assert log[-1]['step'] == 50 and 'eval_answer_nll' in log[-1] and 'lr' in log[-1]
    assert result.eval and 0.0 <= result.eval[-1]['accuracy'] <= 1.0
    assert json.loads((out / 'train_config.json').read_text())['train']['steps'] == 50


def test_save_load_gives_identical_soft_tokens_and_greedy_output(trained, models):
    trainer, _, scenes, out = trained
    trainer.module.eval()
    config = dataclasses.replace(trainer.config, fusion=dataclasses.replace(
        trainer.config.fusion, adapter_path=str(out)),
        mllm=dataclasses.replace(trainer.config.mllm, prompt_template=str(models['template'])))
    reasoner = SceneReasoner(config, trainer.backend)   # loads out/adapter.safetensors
    for scene in scenes[:3]:
        frame = Frame(scene.image, 0, scene.id)
        indices = reasoner.prompts.select_objects(scene.detections)
        question = scene.qas[0].question
        with torch.no_grad():
            batch = trainer.featurizer.build([scene.image], [scene.detections], [indices],
                                             [mentioned_objects(question)])
            expected = trainer.module(batch).soft_tokens[0]
        loaded = reasoner.soft_tokens(frame, scene.detections, question)
        assert torch.equal(loaded, expected)
        a = reasoner.answer(frame, scene.detections, question).grounded_text.raw_text
        request = reasoner.prompts.answer(scene.detections, question, soft_tokens=expected)
        b = trainer.backend.generate(request).text
        assert a == b and a
    # the reloaded module itself equals the trained one, tensor for tensor
    reloaded = load_adapter(out)
    for k, v in trainer.module.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k


def test_resume_continues_the_same_run(models, tmp_path):
    scenes = toy_scenes(6, seed=4)
    straight = Trainer(llm_config(models), train_config(models, steps=4, save_every=2))
    straight.run(scenes, tmp_path / 'a', progress=False)
    first = Trainer(llm_config(models), train_config(models, steps=4, save_every=2))
    first.run(scenes, tmp_path / 'b', progress=False)
    checkpoint = tmp_path / 'b' / 'checkpoint-000002'
    assert (checkpoint / 'optimizer.safetensors').is_file()
    resumed = Trainer(llm_config(models), train_config(models, steps=4, save_every=2))
    result = resumed.run(scenes, tmp_path / 'c', resume=checkpoint, progress=False)
    assert len(result.losses) == 4
    a, c = load_adapter(tmp_path / 'a').state_dict(), load_adapter(tmp_path / 'c').state_dict()
    for k in a:
        assert torch.allclose(a[k], c[k], atol=1e-5), k


def test_resume_refuses_a_checkpoint_of_another_config(trained, models, tmp_path):
    _, _, scenes, out = trained
    other = Trainer(llm_config(models), train_config(models, steps=2, adapter=dict(
        ADAPTER, num_queries=4)))
    with pytest.raises(ModelLoadError) as e:
        other.run(scenes, tmp_path / 'x', resume=out, progress=False)
    assert '(12, 64)' in str(e.value) and '(8, 64)' in str(e.value)   # 4 hint + K


@pytest.mark.parametrize('family, adapter', [
    ('qwen2_vl', dict(ADAPTER, roi_source='vision')),   # vision tokens + roi_align on its grid
    ('idefics3', dict(ADAPTER)),                        # vision tokens + object crops
])
def test_vlm_training_plumbing(models, family, adapter, tmp_path):
    config = load_config(overrides={'mllm.backend': 'transformers_vlm',
                                    'mllm.model': str(models[family]), 'mllm.device': 'cpu',
                                    'mllm.image_max_side': 64})
    trainer = Trainer(config, train_config(models, steps=2, scenes_per_step=2,
                                           questions_per_scene=2, adapter=adapter))
    assert trainer.adapter_config.vision_dim == trainer.backend.hidden_size
    scenes = toy_scenes(4, seed=5)
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    result = trainer.run(scenes, tmp_path, eval_scenes=scenes[:2], progress=False)
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    changed = [k for k, v in trainer.module.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith('vision_proj') for k in changed)
    assert any(k.startswith('roi_encoder') for k in changed)
    assert 'accuracy' in result.eval[-1]


def test_cli_trains_and_resumes(models, tmp_path):
    from mr_mllm_ros.cli import main
    write_jsonl(toy_scenes(6, seed=8), tmp_path / 'data')
    cfg = tmp_path / 'config.yaml'
    cfg.write_text(f'mllm:\n  backend: transformers_llm\n  model: {models["llm"]}\n')
    train = tmp_path / 'train.yaml'
    train.write_text(json.dumps({'adapter': ADAPTER, 'prompt_template': str(models['template']),
                                 'scenes_per_step': 2, 'questions_per_scene': 2,
                                 'warmup_steps': 1, 'eval_scenes': 2, 'log_every': 1}))
    args = ['train-fusion', '--data', str(tmp_path / 'data' / 'data.jsonl'), '--out',
            str(tmp_path / 'adapter'), '--config', str(cfg), '--train-config', str(train),
            '--steps', '4', '--save-every', '2', '--eval-every', '2', '--no-progress']
    assert main(args) == 0
    assert (tmp_path / 'adapter' / 'adapter.safetensors').is_file()
    assert (tmp_path / 'adapter' / 'checkpoint-000002').is_dir()
    resume = args + ['--resume', str(tmp_path / 'adapter' / 'checkpoint-000002')]
    resume[resume.index('--out') + 1] = str(tmp_path / 'adapter2')
    assert main(resume) == 0
    log = (tmp_path / 'adapter2' / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(x)['step'] for x in log][0] == 3
    assert main(['train-fusion', '--data', str(tmp_path / 'data' / 'data.jsonl'), '--out',
                 str(tmp_path / 'bad'), '--config', str(cfg), '--resume',
                 str(tmp_path / 'nothing'), '--steps', '2', '--no-progress']) == 2


def test_keep_best_saves_the_evaluated_weights_with_the_lowest_nll(models, tmp_path):
    scenes, val = toy_scenes(6, seed=4), toy_scenes(3, seed=5)
    tc = train_config(models, steps=6, warmup_steps=1, eval_every=1, save_every=3,
                      keep_best=True)
    # The validation NLL the selection sees, step by step (a run that gets worse after
    # step 2), and the weights at each step.
    scripted = [5.0, 3.0, 4.0, 6.0, 3.5, 7.0]

    def run(trainer, out, resume=None):
        seen = {}
        real = trainer.evaluate

        def evaluate(scenes, with_adapter=True, chunk=8):
            result = real(scenes, with_adapter, chunk)
            step = len(seen) + (3 if resume else 0)
            seen[step + 1] = {k: v.clone() for k, v in trainer.module.state_dict().items()}
            return {**result, 'answer_nll': scripted[step]}
        trainer.evaluate = evaluate
        return trainer.run(scenes, out, eval_scenes=val, resume=resume, progress=False), seen

    straight = Trainer(llm_config(models), tc)
    result, weights = run(straight, tmp_path / 'a')
    assert [e['step'] for e in result.eval] == [1, 2, 3, 4, 5, 6]
    assert result.kept_step == 2
    saved = load_adapter(tmp_path / 'a').state_dict()
    for k, v in weights[2].items():
        assert torch.equal(saved[k], v), k
    assert any(not torch.equal(saved[k], v) for k, v in weights[6].items())
    info = json.loads((tmp_path / 'a' / 'adapter.json').read_text())['info']
    assert info['kept_step'] == 2 and info['eval']['answer_nll'] == 3.0
    # resuming from the step-3 checkpoint keeps the best found before it
    checkpoint = tmp_path / 'a' / 'checkpoint-000003'
    assert (checkpoint / 'best_adapter.safetensors').is_file()
    second, _ = run(Trainer(llm_config(models), tc), tmp_path / 'b', resume=checkpoint)
    assert second.kept_step == 2
    resumed = load_adapter(tmp_path / 'b').state_dict()
    for k, v in saved.items():
        assert torch.equal(resumed[k], v), k


def test_keep_last_saves_the_last_weights(models, tmp_path):
    scenes, val = toy_scenes(6, seed=4), toy_scenes(3, seed=5)
    tc = train_config(models, steps=3, eval_every=1, keep_best=False)
    trainer = Trainer(llm_config(models), tc)
    result = trainer.run(scenes, tmp_path, eval_scenes=val, progress=False)
    assert result.kept_step == 3 and len(result.eval) == 3
    saved = load_adapter(tmp_path).state_dict()
    for k, v in trainer.module.state_dict().items():
        assert torch.equal(saved[k], v.cpu()), k


def test_training_without_a_terminal_logs_one_line_per_log_every_steps(models, tmp_path,
                                                                       caplog):
    caplog.set_level('INFO', logger='mr_mllm_ros.core.fusion.train')
    tc = train_config(models, steps=6, log_every=2)
    Trainer(llm_config(models), tc).run(toy_scenes(6, seed=4), tmp_path, progress=True)
    lines = [m for m in caplog.messages if m.startswith('train-fusion: ')]
    # stderr is not a terminal under pytest: no bar, a line at steps 2, 4 and 6
    assert [m.split()[1] for m in lines] == ['2/6', '4/6', '6/6'], lines
    assert all('loss' in m and 'ETA' in m for m in lines)
