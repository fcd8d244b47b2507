"""The looker's votes counted where a replay is read: each described frame's record in
results.jsonl, summary.json, the report's header and the command's output; the refined
detections carry what the looker saw."""

import json

from helpers.replay_bags import encodings_bag, write_config

from mr_mllm_ros.cli import main


def test_replay_counts_the_looker_votes(tmp_path, capsys):
    encodings_bag(tmp_path / 'photos', 'sqlite3', frames=0)  # the six package photos
    cfg = write_config(tmp_path, backend='template')
    out = tmp_path / 'o'
    assert main(['replay', str(tmp_path / 'photos'), '--out', str(out), '--topics',
                 '/photos/image', '--describe-every-frame', '--config', str(cfg)]) == 0
    recs = [json.loads(x) for x in (out / 'results.jsonl').read_text().splitlines()]
    assert len(recs) == 6 and all(r['status'] == 'ok' for r in recs)
    votes = [r['looker'] for r in recs]
    assert all(set(v) >= {'verified', 'relabelled', 'rejected', 'named', 'unsure', 'added'}
               for v in votes)
    summary = json.loads((out / 'summary.json').read_text())
    totals = {k: sum(v[k] for v in votes) for k in votes[0]}
    assert summary['looker'] == totals and totals['verified'] >= 4
    looked = [d for r in recs for d in r['refined']['items'] if d.get('looks_like')]
    assert looked and all(isinstance(p, float) for d in looked for _, p in d['looks_like'])
    assert any(r['refined'].get('looks_like') for r in recs)  # the whole frame
    assert f'{totals["verified"]} verified' in (out / 'report.html').read_text()
    assert f'looker: {totals["verified"]} verified' in capsys.readouterr().out
