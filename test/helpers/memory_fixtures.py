"""A scripted scene for the memory tests: one camera watching for 25 s at 2 Hz; a tie
(track 3) for the first 10 s, drifting right; a person throughout, track 1 then (after a
re-identification) track 7; a second camera that sees a cup once; one description."""

from mr_mllm_ros.core.config import load_config, with_changes
from mr_mllm_ros.core.memory import SceneMemory
from mr_mllm_ros.core.types import (Alert, Box, Detection, DetectionSet, GroundedPhrase,
                                    GroundedText, SceneDescription, Severity)

S = 1_000_000_000
T0 = 1_700_000_000 * S  # 2023-11-14 22:13:20 UTC
FRAMES = 50
DT = S // 2


def memory_config(**changes):
    base = {'memory.embeddings': False, 'memory.flush_interval_s': 0.05}
    return with_changes(load_config(), {**base, **{f'memory.{k}': v
                                                   for k, v in changes.items()}}).memory


def scene_frames():
    for i in range(FRAMES):
        dets = []
        if i < 20:
            dets.append(Detection(27, 'tie', 0.8, Box(100 + i, 200, 140 + i, 260), track_id=3))
        dets.append(Detection(0, 'person', 0.9, Box(10, 10, 300, 400),
                              track_id=1 if i < 30 else 7))
        yield 'front', DetectionSet(tuple(dets), 640, 480, T0 + i * DT, 'cam')
        if i == 10:
            yield 'rear', DetectionSet((Detection(41, 'cup', 0.6, Box(400, 300, 460, 380),
                                                  track_id=1),), 640, 480, T0 + i * DT, 'rcam')


def description():
    tie = Detection(27, 'tie', 0.8, Box(100, 200, 140, 260), track_id=3)
    return SceneDescription(
        GroundedText('A man wearing a red tie.', '<ground>a red tie</ground>...',
                     (GroundedPhrase('a red tie', 14, 23, (0,)),)),
        DetectionSet((tie,), 640, 480, T0 + 5 * S, 'cam'), 'yolov3-tiny', 'smollm2')


def fill(memory: SceneMemory) -> None:
    for camera, ds in scene_frames():
        memory.record_detections(ds, camera)
    memory.record_description(description(), 'front')
    memory.record_alert(Alert(Severity.WARN, 'hazard_in_region', 'tie_rule', 'rule',
                              'tie in region', T0 + 2 * S, 'cam',
                              (Detection(27, 'tie', 0.8, Box(100, 200, 140, 260), 3),)),
                        'front')
    assert memory.flush(120)


#: Questions whose answers must agree between SQLite and PostgreSQL (and with replay).
QUESTIONS = (
    'When did you last see a tie?',
    'When did you first see a person?',
    'Have you seen a dog?',
    'How long was the tie there?',
    'How many people did you see?',
    'How many people did you see between 22:13:30 and 22:13:44?',
    'What was in the left half between 2023-11-14T22:13:20 and 2023-11-14T22:13:25?',
    'What was in the bottom right corner?',
    'Where is the cup?',
    'What did the man wear?',
)
