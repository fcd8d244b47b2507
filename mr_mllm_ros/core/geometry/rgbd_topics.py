"""Where an RGB-D camera puts its colour image, its depth aligned to it and the colour
camera's calibration, by driver naming (relative to the camera's namespace):

    image_depth   image                 depth                              camera_info
    realsense     color/image_raw       aligned_depth_to_color/image_raw   color/camera_info
    azure_kinect  rgb/image_raw         depth_to_rgb/image_raw             rgb/camera_info

The nodes subscribe by layout (camera.rgbd; `custom` names the depth and camera_info
topics itself); the replay finds these layouts among a bag's topics with no flag. A
compressed colour image is `<image>/compressed`, a compressed depth
`<depth>/compressedDepth` (image_transport's names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class RgbdTopics:
    image: str
    depth: str
    camera_info: str


LAYOUTS = {
    'image_depth': RgbdTopics('image', 'depth', 'camera_info'),
    'realsense': RgbdTopics('color/image_raw', 'aligned_depth_to_color/image_raw',
                            'color/camera_info'),
    'azure_kinect': RgbdTopics('rgb/image_raw', 'depth_to_rgb/image_raw', 'rgb/camera_info'),
}
RGBD_CHOICES = ('none', *LAYOUTS, 'custom')


def layout_topics(rgbd: str, depth_topic: str = '',
                  camera_info_topic: str = '') -> RgbdTopics | None:
    """Relative topics of a layout (camera.rgbd); None for 'none' (colour only)."""
    if rgbd == 'none':
        return None
    if rgbd == 'custom':
        return RgbdTopics('image', depth_topic, camera_info_topic)
    return LAYOUTS[rgbd]


@dataclass(frozen=True)
class BagDepth:
    """The depth and camera_info topics that belong to a colour topic of a bag."""

    depth: str
    camera_info: str
    layout: str


def _base(topic: str) -> str:
    t = '/' + topic.strip('/')
    for suffix in ('/compressed', '/compressedDepth'):
        if t.endswith(suffix):
            return t[:-len(suffix)]
    return t


def find_depth_topics(topics: Iterable[str]) -> dict[str, BagDepth]:
    """Colour topic -> its depth and camera_info topics, for every colour topic among
    `topics` that an RGB-D layout pairs with both (a colour topic with several depth
    candidates takes the raw one before its compressedDepth form)."""
    names = {'/' + t.strip('/') for t in topics}
    found: dict[str, BagDepth] = {}
    for topic in sorted(names):
        base = _base(topic)
        if base != topic and not topic.endswith('/compressed'):
            continue  # a compressedDepth stream is never a colour topic
        for name, layout in LAYOUTS.items():
            suffix = '/' + layout.image
            if not base.endswith(suffix):
                continue
            ns = base[:-len(suffix)]
            info = f'{ns}/{layout.camera_info}'
            depth = next((d for d in (f'{ns}/{layout.depth}',
                                      f'{ns}/{layout.depth}/compressedDepth') if d in names),
                         None)
            if depth is not None and info in names:
                found[topic] = BagDepth(depth, info, name)
                break
    return found


def depth_topics(topics: Iterable[str]) -> set[str]:
    """The topics among `topics` that are depth images of an RGB-D layout (not cameras)."""
    return {d.depth for d in find_depth_topics(topics).values()}
