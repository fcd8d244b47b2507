"""Nothing reaches beyond this machine at run time: the demo (every process of the graph)
and a replay with descriptions run under an audit hook that fails any socket connect,
datagram or DNS lookup outside loopback (test/netguard/sitecustomize.py); a positive
control proves the hook bites."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

GUARD = Path(__file__).resolve().parent / 'netguard'


def _guarded_env(log: Path) -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(GUARD)] + ([env['PYTHONPATH']]
                                                         if env.get('PYTHONPATH') else []))
    env['MR_MLLM_NETGUARD_LOG'] = str(log)
    return env


def test_the_guard_refuses_outside_connections_and_lookups(tmp_path):
    log = tmp_path / 'net.log'
    code = ('import socket\n'
            'for f in (lambda: socket.getaddrinfo("example.com", 443),\n'
            '          lambda: socket.create_connection(("192.0.2.1", 80), timeout=1)):\n'
            '    try:\n        f()\n    except PermissionError:\n        print("refused")\n'
            's = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); p = s.getsockname()[1]\n'
            'socket.create_connection(("127.0.0.1", p), timeout=1); print("loopback ok")\n')
    out = subprocess.run([sys.executable, '-c', code], env=_guarded_env(log),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ['refused', 'refused', 'loopback', 'ok'], out.stderr
    assert len(log.read_text().splitlines()) == 2


@pytest.mark.graph
def test_demo_makes_no_outside_connection(tmp_path):
    log = tmp_path / 'net.log'
    out = subprocess.run([sys.executable, '-m', 'mr_mllm_ros.cli', 'demo', '--out',
                          str(tmp_path / 'demo'), '--images', 'camera', 'grace_hopper'],
                         env=_guarded_env(log), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert 'description by' in out.stdout and 'ask_scene' in out.stdout
    assert not log.exists() or log.read_text() == '', log.read_text()


def test_replay_makes_no_outside_connection(tmp_path):
    """A bag of the shipped photos replayed with the offline default models (detector and
    SmolLM2 descriptions, the paths that could reach a model hub) under the guard."""
    import json

    from helpers.replay_bags import encodings_bag
    encodings_bag(tmp_path / 'photos', 'mcap', frames=0)          # the six photos only
    log = tmp_path / 'net.log'
    out = subprocess.run([sys.executable, '-m', 'mr_mllm_ros.cli', 'replay',
                          str(tmp_path / 'photos'), '--out', str(tmp_path / 'r'),
                          '--every', '3', '--no-progress'],
                         env=_guarded_env(log), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / 'r' / 'results.jsonl').read_text().splitlines()]
    assert len(lines) == 2 and any(r.get('description') for r in lines)
    assert not log.exists() or log.read_text() == '', log.read_text()
