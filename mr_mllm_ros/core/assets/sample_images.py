"""Real photos that installed packages ship (no download): the demo's camera, the
tests' ground truth and the evaluation set. Each loader returns (H, W, 3) uint8 RGB."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data
        img = getattr(skimage.data, name)()
        if name == 'stereo_motorcycle':
            img = img[0]  # (left, right, disparity): the left view
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        return np.ascontiguousarray(img[..., :3])
    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib

    from ..images import read_rgb
    return read_rgb(Path(matplotlib.get_data_path()) / 'sample_data' / 'grace_hopper.jpg')


#: name -> (loader, where it comes from)
SAMPLES: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    'astronaut': (_skimage('astronaut'), 'scikit-image skimage.data.astronaut()'),
    'coffee': (_skimage('coffee'), 'scikit-image skimage.data.coffee()'),
    'chelsea': (_skimage('chelsea'), 'scikit-image skimage.data.chelsea()'),
    'motorcycle': (_skimage('stereo_motorcycle'),
                   'scikit-image skimage.data.stereo_motorcycle()[0] (left view)'),
    'camera': (_skimage('camera'), 'scikit-image skimage.data.camera() (grey, as RGB)'),
    'grace_hopper': (_grace_hopper, "matplotlib's sample_data/grace_hopper.jpg"),
}


def load_sample(name: str) -> np.ndarray:
    try:
        loader, _ = SAMPLES[name]
    except KeyError:
        raise KeyError(f'unknown sample image {name!r}; known: {", ".join(SAMPLES)}') from None
    return loader()
