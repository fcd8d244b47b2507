"""mr_mllm_ros: camera topics -> YOLO detection -> multimodal LLM -> grounded scene
descriptions, corner-case alerts and visual question answering (ROS 2)."""

__version__ = '0.1.0'
