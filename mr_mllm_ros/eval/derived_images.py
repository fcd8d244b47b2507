"""Crops and composites of the packaged sample photos, named by their recipe, so a
labelled set can hold more views of the same real photos without committing pixels:

  `crop:<sample>:<x>,<y>,<w>,<h>`
      the region of sample <sample> (pixels: top-left x, y, width, height)
  `compose:<W>x<H>:<sample>@<x>,<y>,<w>,<h>+<sample>@<x>,<y>,<w>,<h>+...`
      a W x H mid-grey canvas with each sample resized (area interpolation) into its
      rectangle; later parts are drawn over earlier ones

data/sample_photos/instances.json uses them as `file_name`s (README there).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core.assets.sample_images import load_sample
from ..core.errors import ConfigError

CROP_PREFIX = 'crop:'
COMPOSE_PREFIX = 'compose:'
CANVAS_LEVEL = 128


def is_derived(ref: str) -> bool:
    return ref.startswith((CROP_PREFIX, COMPOSE_PREFIX))


def _rect(ref: str, text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(','))
    except ValueError:
        raise ConfigError(f'image {ref!r}: {text!r} is not <x>,<y>,<w>,<h> '
                          '(integers)') from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise ConfigError(f'image {ref!r}: rectangle {text!r} must have x, y >= 0 and '
                          'w, h >= 1')
    return x, y, w, h


def _sample(ref: str, name: str) -> np.ndarray:
    try:
        return load_sample(name)
    except KeyError as e:
        raise ConfigError(f'image {ref!r}: {e.args[0]}') from None


def load_derived(ref: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a crop: / compose: reference; ConfigError when malformed."""
    if ref.startswith(CROP_PREFIX):
        name, sep, rect = ref[len(CROP_PREFIX):].partition(':')
        if not sep:
            raise ConfigError(f'image {ref!r}: expected crop:<sample>:<x>,<y>,<w>,<h>')
        rgb = _sample(ref, name)
        x, y, w, h = _rect(ref, rect)
        if x + w > rgb.shape[1] or y + h > rgb.shape[0]:
            raise ConfigError(f'image {ref!r}: the crop leaves the {rgb.shape[1]}x'
                              f'{rgb.shape[0]} photo')
        return np.ascontiguousarray(rgb[y:y + h, x:x + w])
    size, sep, parts = ref[len(COMPOSE_PREFIX):].partition(':')
    try:
        cw, ch = (int(v) for v in size.split('x'))
        if not sep or not parts or cw < 1 or ch < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f'image {ref!r}: expected compose:<W>x<H>:<sample>@<x>,<y>,<w>,<h>'
                          '+...') from None
    canvas = np.full((ch, cw, 3), CANVAS_LEVEL, np.uint8)
    for part in parts.split('+'):
        name, at, rect = part.partition('@')
        if not at:
            raise ConfigError(f'image {ref!r}: part {part!r} is not <sample>@<x>,<y>,<w>,<h>')
        x, y, w, h = _rect(ref, rect)
        if x + w > cw or y + h > ch:
            raise ConfigError(f'image {ref!r}: part {part!r} leaves the {cw}x{ch} canvas')
        canvas[y:y + h, x:x + w] = cv2.resize(_sample(ref, name), (w, h),
                                              interpolation=cv2.INTER_AREA)
    return canvas
