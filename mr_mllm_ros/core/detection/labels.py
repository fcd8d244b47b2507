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

#: The official COCO category id of each COCO_CLASSES entry: ids run 1..90 with 10 unused
#: (12, 26, 29, 30, 45, 66, 68, 69, 71, 83). TensorFlow Object Detection API models (the
#: SSD-MobileNet-v2 detector) and COCO annotation files number classes this way.
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
    78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)
#: COCO category id -> index into COCO_CLASSES
COCO_ID_TO_INDEX = {cid: i for i, cid in enumerate(COCO_CATEGORY_IDS)}
