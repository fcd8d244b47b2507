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
