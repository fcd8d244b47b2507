"""Replay writes the scene memory: a bag in which a tie is seen (grace_hopper, offline
default detector + ByteTrack) and then not, replayed with `mr-mllm replay`; memory.db is
questioned with `mr-mllm memory ask|list`; the same results loaded into a real PostgreSQL
server answer the same questions the same way; the report shows the timeline."""

import json

import pytest
from helpers.memory_fixtures import memory_config
from helpers.postgres_server import temporary_postgres, unavailable_reason
from helpers.replay_bags import NS, T0, image_msg, write_bag

from mr_mllm_ros.cli import main
from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.memory import SceneMemory
from mr_mllm_ros.core.memory.store import Database
from mr_mllm_ros.replay.memory_db import fill_memory

FRAMES = ['grace_hopper'] * 3 + ['camera'] * 6
QUESTIONS = ('When did you last see a tie?', 'When did you first see a person?',
             'How long was the tie there?', 'How many people did you see?',
             'Have you seen a giraffe?', 'What was in the bottom half?')


@pytest.fixture(scope='module')
def replayed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('replay_memory')
    msgs = [image_msg(load_sample(s), 'rgb8', T0 + i * NS // 2, 'cam')
            for i, s in enumerate(FRAMES)]
    bag = write_bag(tmp / 'bag', 'sqlite3', {'/front/image': msgs})
    out = tmp / 'out'
    config = tmp / 'config.yaml'
    config.write_text('mllm: {backend: none}\nalerts: {enabled: false}\n')
    assert main(['replay', str(bag), '--out', str(out), '--config', str(config),
                 '--no-progress']) == 0
    records = [json.loads(line) for line in (out / 'results.jsonl').read_text().splitlines()]
    return out, records


def _ask(capsys, db, question):
    assert main(['memory', 'ask', '--db', str(db), question, '--json']) == 0
    return json.loads(capsys.readouterr().out)


def test_replay_writes_memory_db_and_memory_ask_answers_from_it(replayed, capsys):
    out, records = replayed
    db = out / 'memory.db'
    assert db.is_file() and not (out / 'memory.db-wal').exists()
    ties = [(r['stamp_ns'], d['track_id']) for r in records
            for d in r['detections']['items'] if d['class_name'] == 'tie']
    assert ties and ties[-1][0] == T0 + NS  # the third frame; none after it
    a = _ask(capsys, db, 'When did you last see a tie?')
    assert a['kind'] == 'last_seen'
    (ev,) = a['evidence']
    # That frame's tie (the highest track id when the detector boxed more than one).
    assert ev['stamp_ns'] == ties[-1][0] and ev['camera'] == 'front'
    assert ev['track_id'] == max(t for s, t in ties if s == ties[-1][0])
    assert a['watched_to_ns'] == T0 + (len(FRAMES) - 1) * NS // 2
    a = _ask(capsys, db, 'Have you seen a giraffe?')
    assert a['kind'] == 'never_observed' and a['facts']['frames'] == len(FRAMES)
    assert main(['memory', 'list', '--db', str(db)]) == 0
    listing = capsys.readouterr().out
    assert 'tie:' in listing and 'camera front' in listing
    report = (out / 'report.html').read_text()
    assert 'Timeline of objects' in report and 'front tie #' in report


def test_same_answers_from_sqlite_and_postgresql(replayed):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    out, _ = replayed
    sqlite = SceneMemory(str(out / 'memory.db'), create=False, embeddings=False)
    expected = [sqlite.ask(q) for q in QUESTIONS]
    sqlite.close()
    with temporary_postgres() as url:
        Database(url).drop_all()
        pg = SceneMemory.open(memory_config(), url=url, run_label='replay')
        fill_memory(out, pg)
        got = [pg.ask(q) for q in QUESTIONS]
        pg.close()
    for q, a, b in zip(QUESTIONS, expected, got):
        assert (a.kind, a.answer, a.evidence, a.watched_from_ns, a.watched_to_ns) == \
            (b.kind, b.answer, b.evidence, b.watched_from_ns, b.watched_to_ns), q
    assert expected[0].kind == 'last_seen' and expected[4].kind == 'never_observed'
