"""Scene memory core (no ROS): the store on SQLite and on a real PostgreSQL server that
this test starts itself, every question kind with its evidence, free-text routing,
retention, and a kill -9 of a process in the middle of heavy writes."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from helpers.memory_fixtures import DT, QUESTIONS, T0, S, fill, memory_config

from mr_mllm_ros.core.memory import MemoryDbError, SceneMemory
from mr_mllm_ros.core.memory.parse import parse_question
from mr_mllm_ros.core.memory.question_words import Embedder, Vocabulary
from mr_mllm_ros.core.memory.store import Database, enforce_retention


@pytest.fixture
def memory(url):
    m = SceneMemory.open(memory_config(), url=url)
    fill(m)
    yield m
    m.close()


def test_last_seen_answers_with_stamp_track_box_and_the_time_watched_since(memory):
    a = memory.ask('When did you last see a tie?')
    assert a.kind == 'last_seen' and a.success
    (ev,) = a.evidence
    assert (ev.stamp_ns, ev.camera, ev.track_id, ev.class_name) == \
        (T0 + 19 * DT, 'front', 3, 'tie')
    assert ev.box == (119.0, 200.0, 159.0, 260.0)
    assert '22:13:29.500' in a.answer and 'track 3' in a.answer
    assert (a.watched_from_ns, a.watched_to_ns) == (T0, T0 + 49 * DT)
    assert 'kept watching for 15.0 s' in a.answer


def test_never_observed_is_explicit_with_the_watched_span(memory):
    a = memory.ask('Have you ever seen a dog?')
    assert a.kind == 'never_observed' and a.evidence == ()
    assert 'never observed a dog' in a.answer
    assert a.facts['watched_s'] == pytest.approx(24.5) and a.facts['frames'] == 51
    assert '2 cameras' in a.answer
    # A camera that never saw it: the same, for that camera's span only.
    b = memory.ask('When did you last see a tie?', camera='rear')
    assert b.kind == 'never_observed' and 'camera rear' in b.answer
    assert b.facts['frames'] == 1


def test_first_seen_duration_and_count(memory):
    a = memory.ask('When did you first see a person?')
    assert a.kind == 'first_seen' and a.evidence[0].stamp_ns == T0
    a = memory.ask('How long was the tie there?')
    assert a.kind == 'duration' and a.facts['present_s'] == pytest.approx(9.5)
    a = memory.ask('How many people did you see?')
    assert a.kind == 'count_tracks' and a.facts['tracks'] == 2
    assert a.facts['track_ids'] == [['front', 1], ['front', 7]]
    assert [e.track_id for e in a.evidence] == [1, 7]  # each track's first observation
    a = memory.ask('How many people did you see between 22:13:36 and 22:13:44?')
    assert a.facts['tracks'] == 1 and a.facts['track_ids'] == [['front', 7]]


def test_untracked_sightings_are_not_counted_as_tracks(tmp_path):
    from mr_mllm_ros.core.types import Box, Detection, DetectionSet
    m = SceneMemory.open(memory_config(), url=str(tmp_path / 'u.db'))
    m.record_detections(DetectionSet((Detection(0, 'person', 0.9, Box(0, 0, 9, 9)),), 64, 64,
                                     T0, 'cam'), 'front')
    assert m.flush(60)
    a = m.ask('how many people did you see?')
    assert a.kind == 'count_tracks' and 'without track ids' in a.answer
    assert a.facts['tracks'] == 0 and a.evidence[0].track_id == -1
    m.close()


def test_region_between_two_times(memory):
    a = memory.ask('What was in the left half between 2023-11-14T22:13:20 and '
                   '2023-11-14T22:13:25?')
    assert a.kind == 'region'
    assert a.facts['objects'] == {'person': [1], 'tie': [3]}
    assert all(T0 <= e.stamp_ns <= T0 + 5 * S for e in a.evidence)
    a = memory.ask('What was in the bottom right corner?')
    assert a.facts['objects'] == {'cup': [1]}  # only the cup's box reaches there
    a = memory.ask('What was in the region [0.9, 0.9, 1.0, 1.0]?')
    assert a.kind == 'region' and a.facts['objects'] == {} and 'Nothing' in a.answer


def test_description_search_returns_its_grounding(memory):
    a = memory.ask('What did the man wear?')
    assert a.kind == 'description'
    assert 'red tie' in a.answer
    assert [(e.class_name, e.track_id, e.stamp_ns) for e in a.evidence] == \
        [('tie', 3, T0 + 5 * S)]


def test_summary_lists_classes_cameras_and_counts(memory):
    s = memory.summary()
    assert [(c['class'], c['tracks']) for c in s['classes']] == \
        [('cup', 1), ('person', 2), ('tie', 1)]
    assert {c['camera'] for c in s['cameras']} == {'front', 'rear'}
    assert (s['descriptions'], s['alerts'], s['observations']) == (1, 1, 71)
    assert s['bytes'] > 0


def test_same_questions_same_answers_on_sqlite_and_postgresql(tmp_path, pg_url):
    answers = {}
    for name, url in (('sqlite', str(tmp_path / 'm.db')), ('postgresql', pg_url)):
        if name == 'postgresql':
            Database(url, create=False).drop_all()
        m = SceneMemory.open(memory_config(), url=url)
        fill(m)
        answers[name] = [(a.kind, a.answer, a.evidence, a.watched_from_ns, a.watched_to_ns)
                         for a in map(m.ask, QUESTIONS)]
        m.close()
    for q, a, b in zip(QUESTIONS, answers['sqlite'], answers['postgresql']):
        assert a == b, q


@pytest.mark.parametrize('question, kind, classes', [
    ('when did you last see a tie?', 'last_seen', ('tie',)),
    ('Where are my keys... I mean the cell phone?', 'last_seen', ('cell phone',)),
    ('where is the kitty', 'last_seen', ('cat',)),
    ('When did the motorbike first appear?', 'first_seen', ('motorcycle',)),
    ('how long were people around?', 'duration', ('person',)),
    ('How many cups in the last 5 minutes?', 'count_tracks', ('cup',)),
    ('what was on the left side since 10:00?', 'region', ()),
    ('was anything unusual going on?', 'description', ()),
])
def test_free_text_is_routed(question, kind, classes):
    q = parse_question(question, Vocabulary([]), T0)
    assert (q.kind, q.classes) == (kind, classes)


def test_time_phrases_and_regions():
    q = parse_question('how many people in the last 10 seconds', Vocabulary([]), T0)
    assert (q.t0_ns, q.t1_ns) == (T0 - 10 * S, T0)
    q = parse_question('what was in the top left between 22:00 and 22:10:30?',
                       Vocabulary([]), T0)
    assert q.region == (0.0, 0.0, 0.5, 0.5)
    assert q.t0_ns == T0 - (13 * 60 + 20) * S and q.t1_ns == T0 - (2 * 60 + 50) * S
    q = parse_question('what was in [0, 500, 500, 1000]?', Vocabulary([]), T0)
    assert q.region == (0.0, 0.5, 0.5, 1.0)  # the prompts' 0-1000 grid


@pytest.mark.slow
def test_unknown_words_and_descriptions_use_sentence_embeddings(tmp_path):
    embedder = Embedder()
    v = embedder(['a man wearing a red tie', 'a necktie', 'a motorbike in a garage'])
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])
    vocab = Vocabulary(['dog'], embedder)
    hit = vocab.nearest_class('hound')
    assert hit is not None and hit[0] == 'dog', hit
    m = SceneMemory.open(memory_config(embeddings=True), url=str(tmp_path / 'e.db'))
    fill(m)
    a = m.ask('Where did you see the hound?')
    assert a.kind == 'never_observed' and 'Reading "hound" as dog' in a.answer
    a = m.ask('What clothing did he have on?')
    assert a.kind == 'description' and a.facts['similarity'] > 0.1
    m.close()


def test_retention_by_age_and_by_size(tmp_path):
    url = str(tmp_path / 'r.db')
    m = SceneMemory.open(memory_config(), url=url)
    fill(m)
    m.close()
    db = Database(url)
    deleted = enforce_retention(db, max_age_s=10.0, max_bytes=0)
    first = db.query('SELECT MIN(stamp_ns) FROM observations')[0][0]
    assert first >= T0 + 49 * DT - 10 * S and deleted > 0
    before = db.size_bytes()
    enforce_retention(db, max_age_s=0, max_bytes=before // 2)
    assert db.size_bytes() <= before // 2 or \
        db.query('SELECT COUNT(*) FROM observations')[0][0] == 0
    db.close()


def test_bad_url_is_a_clear_error(tmp_path):
    with pytest.raises(MemoryDbError, match='cannot open the memory database'):
        Database('postgresql://nobody:secret@127.0.0.1:1/none')
    try:
        Database('postgresql://nobody:secret@127.0.0.1:1/none')
    except MemoryDbError as e:
        assert 'secret' not in str(e)
    with pytest.raises(MemoryDbError, match='no memory database'):
        SceneMemory(str(tmp_path / 'missing.db'), create=False, embeddings=False)


CHILD = textwrap.dedent('''
    import sys, time
    from mr_mllm_ros.core.memory.records import FrameSeen, Observation
    from mr_mllm_ros.core.memory.writer import MemoryWriter
    w = MemoryWriter(sys.argv[1], batch_size=int(sys.argv[2]), flush_interval_s=0.2,
                     queue_size=1_000_000, watch_gap_s=1.0)
    n, t0 = 0, time.monotonic()
    while True:  # 20 objects per frame, 500 frames/s: 10 000 observations/s
        for k in range(20):
            w.put(Observation(n, 'cam', k, 'person', 0.9, (0, 0, 10, 10), image_w=640, image_h=480))
            n += 1
        w.put(FrameSeen(n, 'cam'))
        print(n, w.pending, flush=True)
        time.sleep(max(0.0, t0 + n / 10000 - time.monotonic()))
''')


def test_kill_9_during_heavy_writes_loses_at_most_one_batch(tmp_path):
    """What a kill -9 loses is what was not committed: the batch being collected, plus
    whatever still waited in the queue behind it when the writer was behind (the child
    reports that backlog; on a quiet machine it stays near 0 at this rate). Committed
    rows are a prefix of what was submitted, and the file opens and answers."""
    db_path, batch = tmp_path / 'fault.db', 500
    proc = subprocess.Popen([sys.executable, '-c', CHILD, str(db_path), str(batch)],
                            stdout=subprocess.PIPE, text=True)
    last, pending = 0, 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            last, pending = map(int, line.split())
            if last >= 30_000:  # ~3 s of heavy writes
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert last >= 30_000, 'the writer child did not get going'
    # The file opens, is intact and answers questions.
    con = sqlite3.connect(db_path)
    assert con.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    count, lo, hi = con.execute('SELECT COUNT(*), MIN(stamp_ns), MAX(stamp_ns) '
                                'FROM observations').fetchone()
    con.close()
    assert lo == 0 and hi == count - 1, 'committed rows are a prefix, no holes'
    lost = last - count
    print(f'\nsubmitted >= {last}, committed {count}, lost {lost} (batch {batch}, '
          f'{pending} records queued behind it at the last report)')
    assert lost <= batch + pending
    m = SceneMemory(str(db_path), create=False, embeddings=False)
    a = m.ask('when did you last see a person?')
    assert a.kind == 'last_seen' and a.evidence[0].stamp_ns == count - 1
    m.close()


def test_thumbnails_once_per_track_and_interval_and_used_as_evidence(tmp_path):
    import cv2
    import numpy as np

    from mr_mllm_ros.core.assets.sample_images import load_sample
    from mr_mllm_ros.core.memory.thumbnails import ThumbnailPolicy, save_crops
    from mr_mllm_ros.core.types import Box, Detection, DetectionSet
    policy = ThumbnailPolicy(5.0)
    ds = lambda t, tid=3: DetectionSet((Detection(27, 'tie', 0.8, Box(214, 416, 292, 539),  # noqa
                                                  track_id=tid),), 512, 600, T0 + t * S, 'c')
    assert policy.due(ds(0), 'front') == [0]
    assert policy.due(ds(1), 'front') == []            # same track, 1 s later
    assert policy.due(ds(1, tid=4), 'front') == [0]    # a new track
    assert policy.due(ds(6), 'front') == [0]           # 6 s later: again
    image = load_sample('grace_hopper')
    thumbs = save_crops(image, ds(0), [0], 'front', tmp_path / 'thumbs', 160, 85)
    crop = cv2.imread(thumbs[0])
    assert crop is not None and max(crop.shape[:2]) <= 160
    # the crop is the tie region: dark and light stripes, not the flag
    assert np.abs(crop.astype(int).mean() - image[416:539, 214:292].mean()) < 30
    m = SceneMemory.open(memory_config(), url=str(tmp_path / 't.db'))
    m.record_detections(ds(0), 'front', thumbs)
    m.record_detections(ds(1), 'front')
    assert m.flush(60)
    (ev,) = m.ask('when did you last see a tie?').evidence
    assert ev.stamp_ns == T0 + S and ev.thumbnail == thumbs[0]  # the track's thumbnail
    m.close()
