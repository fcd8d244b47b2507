"""Keep every run on this machine: no hub downloads, no telemetry, no auto-installs.

Call `apply_offline_env()` before importing ultralytics or transformers (the CLI and the
nodes do it first thing). Values already set by the user win, so a robot that does want
hub downloads can export YOLO_OFFLINE=0 / HF_HUB_OFFLINE=0 itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

OFFLINE_ENV = {
    # ultralytics: importing it otherwise makes DNS lookups; auto-install would pip install.
    'YOLO_OFFLINE': '1',
    'YOLO_AUTOINSTALL': 'false',
    'YOLO_VERBOSE': 'false',
    # Hugging Face: never reach the hub; weights come from local folders.
    'HF_HUB_OFFLINE': '1',
    'TRANSFORMERS_OFFLINE': '1',
    'HF_HUB_DISABLE_TELEMETRY': '1',
    'TOKENIZERS_PARALLELISM': 'false',
}


def apply_offline_env(ultralytics_config_dir: str | os.PathLike | None = None) -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    if 'YOLO_CONFIG_DIR' not in os.environ:
        if ultralytics_config_dir is None:
            from ..config import models_dir
            ultralytics_config_dir = models_dir() / 'ultralytics_config'
        os.environ['YOLO_CONFIG_DIR'] = str(ultralytics_config_dir)
    _provide_fonts(Path(os.environ['YOLO_CONFIG_DIR']))


def _provide_fonts(config_dir: Path) -> None:
    """ultralytics' plotting downloads Arial.ttf from GitHub when it is not in its config
    dir; give it matplotlib's DejaVuSans under those names instead."""
    wanted = [config_dir / 'Arial.ttf', config_dir / 'Arial.Unicode.ttf']
    if all(p.is_file() for p in wanted):
        return
    try:
        import matplotlib
        font = Path(matplotlib.get_data_path()) / 'fonts' / 'ttf' / 'DejaVuSans.ttf'
        config_dir.mkdir(parents=True, exist_ok=True)
        for p in wanted:
            if not p.is_file():
                shutil.copyfile(font, p)
    except (ImportError, OSError):
        pass  # plotting is never on our hot path; a missing font only matters there
