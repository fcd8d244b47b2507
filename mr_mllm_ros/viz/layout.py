"""The Foxglove layout that opens the results of one camera: the image with its
annotations, the positioned objects in 3D (with depth), the latest alert's evidence
image, the description text and the alert log.

config/foxglove_layout.json is this layout for the namespace `mr-mllm up` and the demo
use; the replay writes one for its own topics beside the MCAP (foxglove/layout.json).
"""

from __future__ import annotations

import json

import foxglove.layouts as fl

from .foxglove_messages import camera_topics

LAYOUT_FILE_NAME = 'foxglove_layout.json'


def foxglove_layout(namespace: str) -> str:
    """The layout as Foxglove's JSON (import it with Layout > Import from file)."""
    t = camera_topics(namespace)
    image = fl.ImagePanel(title=f'{t.image} + annotations', config=fl.ImageConfig(
        image_mode=fl.ImageModeConfig(
            image_topic=t.image,
            annotations={t.annotations: fl.ImageAnnotationSettings(visible=True)})))
    evidence = fl.ImagePanel(title='alert evidence', config=fl.ImageConfig(
        image_mode=fl.ImageModeConfig(image_topic=t.evidence)))
    description = fl.RawMessagesPanel(title='scene description', config=fl.RawMessagesConfig(
        topic_path=f'{t.description}.text', font_size=16))
    alert_log = fl.LogPanel(title='alert log', config=fl.LogConfig(topic_to_render=t.alert_log))
    scene = fl.ThreeDeePanel(title='objects in 3D (with depth)', config=fl.ThreeDeeConfig(
        topics={t.scene: fl.BaseRendererSceneUpdateTopicSettings(visible=True)}))
    right = fl.SplitContainer(direction='column', items=[
        fl.SplitItem(proportion=2, content=scene),
        fl.SplitItem(proportion=2, content=evidence),
        fl.SplitItem(proportion=1, content=description),
        fl.SplitItem(proportion=2, content=alert_log)])
    layout = fl.Layout(content=fl.SplitContainer(direction='row', items=[
        fl.SplitItem(proportion=2, content=image), fl.SplitItem(proportion=1, content=right)]))
    return json.dumps(json.loads(layout.to_json()), indent=2) + '\n'
