"""Small builders of core values that many unit tests write: a detection, a detection
set, a frame. Defaults are plain; each test passes what it is about."""

import numpy as np

from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame


def det(cls='person', box=(40, 40, 60, 80), score=0.9, track=-1, class_id=0,
        **kw) -> Detection:
    """One detection; `box` (x1, y1, x2, y2) px; `kw`: any other Detection field."""
    return Detection(class_id, cls, score, Box(*box), track_id=track, **kw)


def dset(*dets, w=100, h=100, stamp=0, frame_id='cam', model='') -> DetectionSet:
    """A DetectionSet of `dets` on a w x h image (100 x 100: boxes read as percent)."""
    return DetectionSet(tuple(dets), w, h, stamp_ns=stamp, frame_id=frame_id,
                        model_name=model)


def frame(w=100, h=100, stamp=0, frame_id='cam', fill=0) -> Frame:
    """A uniform RGB frame."""
    return Frame(np.full((h, w, 3), fill, np.uint8), stamp, frame_id)


def detect_top3(config, sample: str):
    """A detector made from `config` at conf 0.05 keeping the best 3 boxes, run on one
    package photo: (detector, frame, detections). For the checks every backend must pass:
    sorted by score, clipped to the frame, filtered by class."""
    from mr_mllm_ros.core.assets.sample_images import load_sample
    from mr_mllm_ros.core.config import with_changes
    from mr_mllm_ros.core.detection import create_detector
    detector = create_detector(with_changes(config, {'detector.conf': 0.05,
                                                     'detector.max_detections': 3,
                                                     'detector.warmup': False}))
    image = Frame(load_sample(sample), 0, '')
    return detector, image, detector.detect(image)


def assert_sorted_and_inside(ds: DetectionSet, image: Frame) -> None:
    scores = [d.score for d in ds]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= d.box.x1 <= d.box.x2 <= image.width and
               0 <= d.box.y1 <= d.box.y2 <= image.height for d in ds)
