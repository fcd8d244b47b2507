"""core.annotate: boxes and labels drawn on a copy of the frame."""

import numpy as np

from mr_mllm_ros.core.annotate import class_color, draw_detections
from mr_mllm_ros.core.types import Box, Detection, DetectionSet


def test_the_highest_scored_label_is_drawn_on_top():
    # the demo's cat: two lower-scored 'bed' boxes share its top-left corner
    cat = Detection(15, 'cat', 0.91, Box(8, 0, 400, 290))
    bed = Detection(59, 'bed', 0.26, Box(0, 4, 420, 295))
    rgb = np.full((300, 450, 3), 255, np.uint8)
    out = draw_detections(rgb, DetectionSet((cat, bed), 450, 300))
    assert (rgb == 255).all()  # drawn on a copy
    label = out[2:10, 12:40].reshape(-1, 3)  # inside obj0's label background
    colours = {tuple(int(v) for v in c) for c in label}
    assert tuple(class_color('cat')) in colours and tuple(class_color('bed')) not in colours
