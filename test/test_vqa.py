"""A question's way through the MLLM thread without ROS (core.reasoning.vqa): the answer
streamed as readable text while it is written, cancel, freshness, stages."""

import threading
import time

import numpy as np
import pytest
from helpers.scripted_backend import ScriptedBackend

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.errors import BackendError
from mr_mllm_ros.core.mllm.streaming import TokenStream
from mr_mllm_ros.core.reasoning.scene import SceneReasoner
from mr_mllm_ros.core.reasoning.vqa import (CANCELLED, LOOKING, QUEUED, THINKING,
                                            AnswerProgress, VqaJob, answer_job, stale_reason,
                                            visible_text)
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame


def scene():
    ds = DetectionSet((Detection(0, 'person', 0.9, Box(10, 10, 60, 120)),
                       Detection(27, 'tie', 0.8, Box(30, 40, 40, 70))), 128, 128, 7, 'cam')
    return Frame(np.zeros((128, 128, 3), np.uint8), 7, 'cam'), ds


def test_visible_text_hides_markup_and_a_tag_being_written():
    assert visible_text('<ground>A man</ground><objects><obj0></objects> wears') == 'A man wears'
    assert visible_text('<ground>A man</ground><obj') == 'A man'
    assert visible_text('He holds <obj1> now', ['person', 'tie']) == 'He holds tie now'
    assert visible_text('') == ''


def test_stale_reason_names_the_age_and_tells_stopped_detections_from_a_stopped_camera():
    assert stale_reason(4.23, 4.1, 3.0) == ('stale: newest frame 4.2 s old (no image for '
                                            '4.1 s: is the camera publishing?)')
    assert stale_reason(None).startswith('stale: no frame with detections received yet')
    assert 'is perception_node running, or behind' in stale_reason(15.0, 0.1, 3.0)


def free_answer_reasoner(reply):
    config = load_config(overrides={'mllm.backend': 'template'})
    return SceneReasoner(config, ScriptedBackend(reply=lambda req: req.answer_prefix + reply))


def test_a_free_answer_streams_as_growing_readable_text_ending_in_the_answer():
    frame, ds = scene()
    reasoner = free_answer_reasoner('</ground><objects><obj0></objects> is wearing a tie.')
    seen, stages = [], []
    progress = AnswerProgress(lambda: seen.append(progress.snapshot()[2]))
    stream = progress.stream()
    stream.on_stage = lambda s: (stages.append(s), progress.stage(s))
    answer = reasoner.answer(frame, ds, 'What is the person wearing?', stream)
    texts = [t for t in seen if t]
    assert len(texts) >= 3 and stages == [THINKING]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:])), texts
    assert texts[-1] == answer.text
    assert progress.first_text_s is not None


def test_a_count_answer_streams_the_plan_phrase_by_phrase():
    frame, ds = scene()
    reasoner = free_answer_reasoner(' in the middle')
    pieces = []
    answer = reasoner.answer(frame, ds, 'How many people are there?',
                             TokenStream(pieces.append))
    assert len(pieces) >= 3
    assert visible_text(''.join(pieces), [d.class_name for d in ds]) == answer.text


def job(question='What is here?', **kw):
    return VqaJob(question, 0, deadline=kw.pop('deadline', 1e12), received=0.0, **kw)


def test_answer_job_reports_looking_then_answers_with_the_frame_age():
    frame, ds = scene()
    progress = AnswerProgress()
    j = job(max_age_s=3.0, progress=progress, stream=progress.stream())
    stages = []
    answer_job(j, lambda stamp: (frame, ds),
               lambda f, d, q, s: stages.append(progress.snapshot()[1]) or 'the answer',
               received_at=lambda stamp: 99.0, clock=lambda: 100.0)
    assert j.done.is_set() and j.answer == 'the answer' and j.error == ''
    assert stages == [LOOKING] and progress.snapshot()[3] == 7
    assert j.frame_received_s == 99.0


def test_answer_job_refuses_a_frame_that_went_stale_in_the_queue():
    frame, ds = scene()
    j = job(max_age_s=3.0)
    answer_job(j, lambda stamp: (frame, ds), lambda *a: pytest.fail('must not answer'),
               received_at=lambda stamp: 90.0, clock=lambda: 100.0)
    assert j.error.startswith('stale: newest frame 10.0 s old')
    j = job(max_age_s=None)  # any age
    answer_job(j, lambda stamp: (frame, ds), lambda *a: 'ok',
               received_at=lambda stamp: 90.0, clock=lambda: 100.0)
    assert j.answer == 'ok'


def test_a_cancelled_job_is_skipped_or_stopped_and_says_cancelled():
    frame, ds = scene()
    j = job()
    j.cancel()
    answer_job(j, lambda stamp: pytest.fail('must not look'), lambda *a: None)
    assert j.error == CANCELLED and j.done.is_set()
    # cancelled while the model writes: the stream stops it at the next word
    reasoner = free_answer_reasoner(' '.join(['word'] * 50))
    j = job()
    words = []

    def on_text(piece):
        words.append(piece)
        if len(words) == 3:
            threading.Thread(target=j.cancel).start()
            threading.Event().wait(0.2)  # the cancel lands before the next word
    j.stream = TokenStream(on_text)
    answer_job(j, lambda stamp: (frame, ds), reasoner.answer)
    assert j.error == CANCELLED and j.answer is None
    assert len(words) <= 5, words


def test_progress_stages_in_order_with_version_bumps():
    p = AnswerProgress()
    v0 = p.snapshot()[0]
    p.stage(QUEUED)
    p.stage(LOOKING, 42, ['person'])
    p.add_text('<obj0> waves')
    version, stage, text, stamp = p.snapshot()
    assert version == v0 + 3 and stage == THINKING and text == 'person waves' and stamp == 42


def test_answer_job_answers_refuses_late_and_reports_bugs():
    pair = scene()
    woken = []

    def job_(deadline=60.0):
        j = VqaJob('what?', 0, time.monotonic() + deadline, time.monotonic())
        j.on_done = lambda: woken.append(j)
        return j

    ok = job_()
    answer_job(ok, lambda stamp: pair, lambda f, ds, q, stream: f'answer to {q}')
    assert ok.done.is_set() and ok.answer == 'answer to what?' and woken == [ok]
    late = job_(deadline=-1.0)
    answer_job(late, lambda stamp: pair, lambda *a: pytest.fail('must not run'))
    assert late.error.startswith('timeout') and late.done.is_set()
    missing = job_()
    answer_job(missing, lambda stamp: 'no frame with stamp 5 ns', lambda *a: None)
    assert missing.error == 'no frame with stamp 5 ns'
    failed, bugs = job_(), []
    answer_job(failed, lambda stamp: pair,
               lambda *a: (_ for _ in ()).throw(BackendError('down')))
    assert failed.error == 'answering failed: down'
    buggy = job_()
    answer_job(buggy, lambda stamp: pair, lambda *a: 1 / 0, bugs.append)
    assert buggy.error == 'internal error' and isinstance(bugs[0], ZeroDivisionError)
    assert len(woken) == 5
