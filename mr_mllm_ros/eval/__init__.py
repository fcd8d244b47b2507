"""Evaluation harness: how good are the plugged-in models, and what does the MLLM buy?

metrics   pure functions (no ROS, no models): box matching at IoU 0.5, per-class
          precision/recall averaged over classes (ChatRex protocol), COCO mAP via
          pycocotools, referring-expression accuracy, phrase/class agreement of grounded
          descriptions, event-based alert precision/recall and latency
datasets  COCO json, referring-expression JSONL (and RefCOCO pickles), alert labels over
          image sequences or rosbag2 recordings; `sample:<name>` images
result_files  JSON, markdown tables and a matplotlib PNG (Agg)
grounding_floor  the template backend's descriptions of the same detections (the
          baseline `eval grounding` reports beside the MLLM)
tasks     the procedures: run the models through core.pipeline.Pipeline (the code path
          the nodes use) over a set, score, report
The command line is `mr-mllm eval detections|grounding|alerts` (mr_mllm_ros/app/eval.py).
"""
