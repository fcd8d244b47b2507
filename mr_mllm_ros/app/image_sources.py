"""Images to publish or process: files, folders, and the packaged sample photos."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.assets.sample_images import SAMPLES, load_sample
from ..core.images import read_rgb

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp'}


def iter_images(sources: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, RGB uint8 image) for `sample:<name>` (or `samples` = all), files and folders."""
    for src in sources:
        if src == 'samples':
            for name in SAMPLES:
                yield name, load_sample(name)
        elif src.startswith('sample:'):
            name = src.split(':', 1)[1]
            yield name, load_sample(name)
        else:
            path = Path(src)
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
                if path.is_dir() else [path]
            for f in files:
                yield f.stem, read_rgb(f)
