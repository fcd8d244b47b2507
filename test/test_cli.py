"""`mr-mllm` as a user runs it: fast help without heavy imports, describe without ROS, and
`up --one-process` + `publish-images` + `ask` against a live graph (separate processes)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

CLI = [sys.executable, '-m', 'mr_mllm_ros.cli']


def _run(args, timeout=120, **kw):
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=timeout, **kw)


def test_help_lists_commands_without_importing_ros_or_torch():
    code = ('import sys; from mr_mllm_ros import cli\n'
            'try:\n    cli.main(["--help"])\nexcept SystemExit:\n    pass\n'
            'print(sorted(m for m in ("rclpy", "torch", "transformers", "ultralytics") '
            'if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    assert 'describe' in out.stdout and 'publish-images' in out.stdout
    assert out.stdout.strip().splitlines()[-1] == '[]'


def test_unknown_command_and_bad_config_fail_clearly(tmp_path):
    assert _run(['no-such-command']).returncode == 2
    bad = tmp_path / 'bad.yaml'
    bad.write_text('detector: {conf: 7}\n')
    out = _run(['describe', 'sample:camera', '--config', str(bad)])
    assert out.returncode == 2 and "'detector.conf' = 7" in out.stderr


def test_models_list():
    out = _run(['models', 'list'])
    assert out.returncode == 0 and 'licence' in out.stdout
    assert 'ssd-mobilenet-v2-coco' in out.stdout and 'yolov3-tiny' in out.stdout


def test_describe_prints_and_writes_json(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text(yaml.safe_dump({'mllm': {'backend': 'none'}}))
    out = _run(['describe', 'sample:motorcycle', '--config', str(cfg), '--json',
                str(tmp_path / 'r.json'), '--out', str(tmp_path / 'img')])
    assert out.returncode == 0, out.stderr
    assert '<obj0> motorcycle' in out.stdout
    data = json.loads((tmp_path / 'r.json').read_text())
    assert data[0]['detections'][0]['class'] == 'motorcycle'
    assert (tmp_path / 'img' / 'motorcycle.jpg').stat().st_size > 1000


@pytest.mark.graph
def test_up_one_process_then_publish_images_then_ask(tmp_path):
    env = dict(os.environ)
    up = subprocess.Popen(CLI + ['up', '--one-process', '--namespace', 'cli_cam',
                                 '--duration', '300'], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # both nodes subscribe to the camera; scene_node only once its MLLM is loaded
        # bgr8: a frame the two nodes share decoded (ros/decoded_frames.py; an rgb8
        # frame is a view on its message and not shared), read-only in both
        pub = _run(['publish-images', 'sample:grace_hopper', '--topic', '/cli_cam/image',
                    '--encoding', 'bgr8',
                    '--rate', '2', '--count', '6', '--wait-subscribers', '2',
                    '--wait-timeout', '120'], timeout=200, env=env)
        assert pub.returncode == 0, pub.stdout + pub.stderr
        answer = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = _run(['ask', 'What is the person wearing?', '--namespace', 'cli_cam',
                           '--timeout', '60', '--max-age', '-1'], timeout=120, env=env)
            if answer.returncode == 0:
                break
            time.sleep(2)  # e.g. no frame paired yet
        assert answer.returncode == 0, answer.stdout + answer.stderr
        lines = answer.stdout.strip().splitlines()
        assert lines[0].strip() and 'smollm2' in lines[-1]
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
    assert up.returncode in (0, -signal.SIGINT), up.stdout.read()


@pytest.mark.graph
def test_ask_without_a_graph_says_the_service_was_not_found_and_what_was_seen():
    out = _run(['ask', 'Anyone?', '--namespace', 'nobody_here', '--wait-service', '2'],
               timeout=60)
    assert out.returncode == 3, out.stdout + out.stderr
    assert '/nobody_here/ask_scene not found within 2 s' in out.stderr
    assert "no action named 'ask_scene'" in out.stderr
    assert 'nodes seen' in out.stderr and 'ROS_DOMAIN_ID' in out.stderr


def test_the_executable_exits_although_a_thread_was_left_behind():
    """`entry()` (the mr-mllm executable): when a ROS executor thread outlived its close
    (core.runtime.leftover_threads), the process flushes its output and exits with main()'s code
    instead of waiting at interpreter exit for that thread (here a non-daemon thread that
    never ends, which a plain sys.exit would wait for)."""
    script = (
        'import threading, time\n'
        'from mr_mllm_ros import cli\n'
        'from mr_mllm_ros.core.runtime import leftover_threads\n'
        'def main():\n'
        '    t = threading.Thread(target=time.sleep, args=(600,), name="stuck_spin")\n'
        '    t.start()\n'
        '    leftover_threads.note(t.name)\n'
        '    print("answer printed")\n'
        '    return 4\n'
        'cli.main = main\n'
        'cli.entry()\n')
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 4, done.stderr
    assert done.stdout.strip() == 'answer printed'
