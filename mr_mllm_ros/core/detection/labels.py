"""Class-name conventions. Everything downstream of the detector (prompts, alert rules,
evaluation, messages) uses COCO's category names - what ultralytics' COCO models and COCO
annotations say - so a rule for `motorcycle` works with every backend."""

#: Darknet's coco.names (the offline default detector) spells six COCO categories the
#: Pascal VOC way.
DARKNET_TO_COCO = {
    'motorbike': 'motorcycle',
    'aeroplane': 'airplane',
    'sofa': 'couch',
    'pottedplant': 'potted plant',
    'diningtable': 'dining table',
    'tvmonitor': 'tv',
}


def coco_name(name: str) -> str:
    return DARKNET_TO_COCO.get(name, name)


#: COCO-80 category names: what a question may ask about even if never observed.
COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
    'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
    'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake',
    'chair', 'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop',
    'mouse', 'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier',
    'toothbrush',
)
