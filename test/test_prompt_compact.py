"""The compact perception-embedded prompt (scene_v2, the default): objects grouped under
one header per class with their count (duplicate boxes counted once), short object lines
without box coordinates or track ids, and an object block capped by
mllm.object_token_budget. Token counts use the committed tiny byte-level tokenizer (the
SmolLM2 figures are in docs/BENCHMARKS.md); it shows the ratio, not the exact numbers."""

from transformers import PreTrainedTokenizerFast

from helpers.make_tiny_models import FIXTURE_DIR
from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.reasoning.prompts import PromptBuilder, load_template
from mr_mllm_ros.core.types import Box, Detection, DetectionSet

TOKENIZER = PreTrainedTokenizerFast.from_pretrained(str(FIXTURE_DIR))


def _tokens(text: str) -> int:
    return len(TOKENIZER(text, add_special_tokens=False)['input_ids'])


def _street(n_people: int = 8) -> DetectionSet:
    people = [Detection(0, 'person', 0.9 - 0.05 * k, Box(60 * k, 200, 60 * k + 30, 280),
                        track_id=k + 1) for k in range(n_people)]
    legs = Detection(0, 'person', 0.3, Box(2, 240, 28, 280))  # a part-box of person 0
    cars = [Detection(2, 'car', 0.8, Box(600, 20, 700, 80), track_id=50)]
    return DetectionSet((*people, legs, *cars), 768, 576, 1, 'cam')


def _builder(template: str, **mllm) -> PromptBuilder:
    config = load_config(overrides={f'mllm.{k}': v for k, v in mllm.items()})
    return PromptBuilder(load_template(template), config.mllm, _tokens, False)


def test_the_default_template_groups_objects_by_class_with_counts():
    assert load_config().mllm.prompt_template == 'scene_v2'
    block, chosen = _builder('scene_v2').object_block(_street())
    lines = block.split('\n')
    assert lines[0] == 'person (8):' and 'car (1):' in lines  # 9 boxes, 8 people
    assert lines[1] == '<obj0> left, small, 90%'
    assert not any('track' in line or '[' in line for line in lines)
    assert len(chosen) == 10


def test_v2_costs_well_under_half_the_tokens_per_object_of_v1():
    ds = _street()
    per_object = {}
    for name in ('scene_v1', 'scene_v2'):
        block, chosen = _builder(name).object_block(ds)
        per_object[name] = _tokens(block) / len(chosen)
    assert per_object['scene_v2'] < 0.5 * per_object['scene_v1'], per_object


def test_the_object_block_keeps_its_token_budget_headers_included():
    ds = _street(20)
    for budget in (64, 128, 256):
        builder = _builder('scene_v2', object_token_budget=budget)
        block, chosen = builder.object_block(ds)
        assert 0 < len(chosen) < len(ds) and _tokens(block) <= budget + len(chosen), budget
        # the best-scoring objects enter first
        assert set(chosen) == set(sorted(range(len(ds)), key=lambda i: -ds[i].score)
                                  [:len(chosen)])
