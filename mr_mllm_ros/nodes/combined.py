"""perception_node and scene_node of one camera in ONE process (one executor, one Python
and torch runtime: less memory than two processes). Topics still go through the
middleware - rclpy has no intra-process zero-copy - but on one host that is shared
memory with the shipped Fast DDS profile. Each node still gets its own copy of an image
message, but the frame decoded from it is shared (ros/decoded_frames.py): an image is
decoded once per process.

    ros2 run mr_mllm_ros combined_nodes --ros-args -r __ns:=/front_cam --params-file p.yaml
"""

from __future__ import annotations

from ..ros import conversions
from ..ros.decoded_frames import DecodedFrames
from ..ros.node_runtime import run_node
from .perception_node import PerceptionNode
from .scene_node import SceneNode


def main(args=None) -> int:
    conversions.share_decoded_frames(DecodedFrames())
    return run_node([PerceptionNode, SceneNode], args)


if __name__ == '__main__':
    raise SystemExit(main())
