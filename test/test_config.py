"""core.config: one YAML of defaults, validated merges, errors that name key/value/allowed."""

import pytest
import yaml

from mr_mllm_ros.core import config as cfg
from mr_mllm_ros.core.errors import ConfigError


def test_packaged_defaults_define_every_key_once():
    c = cfg.load_config()
    assert c.detector.backend == 'opencv_ssd' and c.detector.imgsz == 300
    assert c.detector.classes == []
    leaves = list(cfg.iter_leaves())
    names = [n for n, _, _ in leaves]
    assert len(names) == len(set(names))
    # every parameter is documented (nodes publish these as descriptors)
    assert all(meta['doc'] for _, _, meta in leaves)


def test_user_file_in_ros_params_format_overrides_only_its_keys(tmp_path):
    f = tmp_path / 'p.yaml'
    f.write_text(yaml.safe_dump({
        '/**': {'ros__parameters': {'detector': {'conf': 0.5}}},
        '/cam1/perception_node': {'ros__parameters': {'detector': {'imgsz': 320}}},
        '/other_node': {'ros__parameters': {'detector': {'imgsz': 999}}},
    }))
    c = cfg.load_config(f, node='perception_node')
    assert c.detector.conf == 0.5 and c.detector.imgsz == 320
    assert c.detector.iou == cfg.load_config().detector.iou


def test_plain_mapping_and_dotted_overrides(tmp_path):
    f = tmp_path / 'p.yaml'
    f.write_text('detector:\n  conf: 0.3\n')
    c = cfg.load_config(f, overrides={'detector.iou': 0.6, 'mllm': {'max_new_tokens': 7}})
    assert (c.detector.conf, c.detector.iou, c.mllm.max_new_tokens) == (0.3, 0.6, 7)


@pytest.mark.parametrize('override, words', [
    ({'detector.conf': 1.5}, ["'detector.conf'", '1.5', '0.0 <= value <= 1.0']),
    ({'detector.backend': 'darknet2'}, ["'detector.backend'", 'darknet2', 'opencv_darknet',
                                        'ultralytics']),
    ({'detector.colour': 'red'}, ["'detector.colour'", 'allowed keys', 'conf']),
    ({'detector.imgsz': 'big'}, ["'detector.imgsz'", 'big', 'expected int']),
    ({'detector.half': 'yes'}, ["'detector.half'", 'expected bool']),
    ({'detector.classes': 'person'}, ["'detector.classes'", 'list']),
    ({'detector.conf': float('nan')}, ["'detector.conf'", 'finite']),
    ({'camera': 3}, ['camera', 'mapping']),
])
def test_bad_values_name_key_value_and_what_is_allowed(override, words):
    with pytest.raises(ConfigError) as e:
        cfg.load_config(overrides=override)
    for w in words:
        assert w in str(e.value)


def test_bad_files_give_config_errors(tmp_path):
    with pytest.raises(ConfigError, match='cannot read'):
        cfg.load_config(tmp_path / 'missing.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('detector: [unclosed\n')
    with pytest.raises(ConfigError, match='not valid YAML'):
        cfg.load_config(bad)
    scalar = tmp_path / 'scalar.yaml'
    scalar.write_text('42\n')
    with pytest.raises(ConfigError, match='mapping'):
        cfg.load_config(scalar)


def test_int_is_accepted_for_float_but_not_bool_for_int():
    assert cfg.load_config(overrides={'detector.conf': 1}).detector.conf == 1.0
    with pytest.raises(ConfigError):
        cfg.load_config(overrides={'detector.imgsz': True})


def test_model_paths_resolve_in_models_dir(tmp_path):
    c = cfg.load_config(overrides={'models_dir': str(tmp_path)})
    assert c.resolve_model_path('a/b.weights') == tmp_path / 'a' / 'b.weights'
    assert c.resolve_model_path('/abs/x.pt') == cfg.Path('/abs/x.pt')


def test_with_changes_validates():
    c = cfg.load_config()
    assert cfg.with_changes(c, {'detector.conf': 0.9}).detector.conf == 0.9
    with pytest.raises(ConfigError):
        cfg.with_changes(c, {'detector.conf': -1})
