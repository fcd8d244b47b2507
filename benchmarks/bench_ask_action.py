"""The ask_scene action on the real graph (perception_node + scene_node in separate
processes, offline default models, a 10 Hz camera of one real photo).

    bash scripts/with_env.sh python benchmarks/bench_ask_action.py [--cancels 20]
        [--procs 10] [--clients 3] [--rounds 4] [--compare-service] [--json out.json]

1. Cancel while generating: a goal, cancelled 0-0.5 s after its first answer text; from
   the cancel request to the cancel accepted (the goal CANCELING) and to the goal's
   CANCELED result, p50/p95/max; and from the cancel to the next goal's first text (the
   MLLM free again; the next goal is sent with the cancel).
2. Load: --procs client processes x --clients action clients each (30 by default; one
   node per process), one goal each at once, every other goal cancelled 1 s after it was
   accepted; every goal must end with a result, a cancellation or "busy" (a rejected
   goal: the queue was full), and none may hang; --rounds such rounds, each after an
   idle window as long as the round before. Detections/s and scene frames paired/s as a
   share of the camera's frames, idle vs during the load (the nodes keep their rate when
   the share stays within 10 %; compared round by round, since the machine's other load
   drifts). `--compare-service` then runs one round of as many questions through the
   ask_scene service, for comparison.
Nothing asserts on time; the machine is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'test'))
from measure import write_json  # noqa: E402
from proc_cpu import cpu_delta, cpu_snapshot  # noqa: E402

from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec, ensure_local_ros_env  # noqa: E402
from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()
ensure_local_ros_env()

import cv2  # noqa: E402
import yaml  # noqa: E402
from action_msgs.msg import GoalStatus  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from helpers.graph_helpers import latest_status  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mr_mllm_interfaces.action import AskScene  # noqa: E402
from mr_mllm_interfaces.msg import DetectionArray  # noqa: E402
from mr_mllm_ros.core.assets.sample_images import load_sample  # noqa: E402
from mr_mllm_ros.ros import conversions as conv  # noqa: E402
from mr_mllm_ros.ros.client import RosClient  # noqa: E402
from mr_mllm_ros.ros.qos import RESULTS_QOS  # noqa: E402

NS = 'bench_ask'
ACTION = f'/{NS}/ask_scene'
QUESTION = 'What is the person doing?'
CLIENT = ROOT / 'test' / 'helpers' / 'ask_action_client.py'
SERVICE_CLIENT = ROOT / 'test' / 'helpers' / 'vqa_load_client.py'
CAMERA_HZ, IDLE_S = 10.0, 8.0


def pct(values, q):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))], 3)


def summary(values):
    return {'n': len(values), 'p50': pct(values, 50), 'p95': pct(values, 95),
            'max': round(max(values), 3)} if values else {'n': 0}


class Camera:
    def __init__(self, ros):
        self.pub = ros.publisher(Image, f'/{NS}/image', 10)
        self.photo = cv2.resize(load_sample('grace_hopper'), (640, 480))
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        period, next_t, stamp = 1.0 / CAMERA_HZ, time.monotonic(), 0
        while not self._stop.is_set():
            stamp += 1
            self.pub.publish(conv.image_msg(self.photo, 'rgb8', stamp, 'cam'))
            self.sent += 1
            next_t += period
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def stop(self):
        self._stop.set()
        self._thread.join()


def goal(ros, question=QUESTION):
    texts = []
    call = ros.send_goal(AskScene, ACTION, AskScene.Goal(
        question=question, client_node=ros.node.get_fully_qualified_name()),
        lambda fb: texts.append((time.monotonic(), fb.text)) if fb.text else None,
        wait_server_s=120)
    return call, texts


def wait_ready(ros, limit_s=300):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        call, _ = goal(ros, 'Is anyone there?')
        if call.wait(180) and call.result.success:
            return True
        time.sleep(1.0)
    return False


def cancels(ros, n):
    ack, done, next_text, statuses = [], [], [], []
    rng = random.Random(0)
    for _ in range(n):
        call, texts = goal(ros)
        deadline = time.monotonic() + 180
        while not texts and not call.done and time.monotonic() < deadline:
            time.sleep(0.005)
        if not texts:
            statuses.append(f'no text ({call.result.error if call.result else "no result"})')
            call.wait(180)
            continue
        time.sleep(rng.uniform(0.0, 0.5))
        if call.done:  # the answer was complete first (short answers)
            statuses.append('finished before the cancel')
            continue
        accepted = call.cancel(timeout=30)
        nxt, nxt_texts = goal(ros)
        call.wait(60)
        statuses.append({GoalStatus.STATUS_CANCELED: 'canceled',
                         GoalStatus.STATUS_SUCCEEDED: 'succeeded'}.get(call.status,
                                                                       str(call.status)))
        if accepted and call.status == GoalStatus.STATUS_CANCELED:
            ack.append(call.cancel_accepted_at - call.cancel_sent_at)
            done.append(call.done_at - call.cancel_sent_at)
        nxt_deadline = time.monotonic() + 180
        while not nxt_texts and not nxt.done and time.monotonic() < nxt_deadline:
            time.sleep(0.005)
        if nxt_texts and call.cancel_sent_at:
            next_text.append(nxt_texts[0][0] - call.cancel_sent_at)
        nxt.cancel(timeout=30)
        nxt.wait(60)
    out = {'cancel_to_canceling_s': summary(ack), 'cancel_to_canceled_s': summary(done),
           'cancel_to_next_goal_first_text_s': summary(next_text),
           'outcomes': {s: statuses.count(s) for s in set(map(str, statuses))}}
    print('cancel while generating:', json.dumps(out), flush=True)
    return out


def paired(diag):
    st = latest_status(diag, f'/{NS}/scene_node')
    return int(st[1]['frames_paired']) if st else 0


def rates(dets, diag, cam, seconds):
    n0, p0, s0, t0 = len(dets), paired(diag), cam.sent, time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return (len(dets) - n0) / dt, (paired(diag) - p0) / dt, (cam.sent - s0) / dt


def load(ros, dets, diag, cam, procs, clients, rounds, node_pids, service=False):
    """`rounds` rounds of procs x clients concurrent goals, each after an idle window as
    long as the round before it (the machine's other load drifts: compare in pairs).
    `service`: one round of the same number of questions through the ask_scene service
    instead (test/helpers/vqa_load_client.py, no cancels), for comparison.
    node_pids: {'perception': pid, 'scene': pid}; each window's CPU seconds per second
    of them, of the client processes, of this process and of the rest of the machine."""
    work = Path(tempfile.mkdtemp(prefix='bench_ask_'))
    go = work / 'go'
    command = [sys.executable, str(SERVICE_CLIENT), ACTION, str(clients), '60', str(go),
               str(work)] if service else \
        [sys.executable, str(CLIENT), ACTION, str(go), str(work), '--clients', str(clients),
         '--cancel', '1.0', '--rounds', str(rounds)]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(procs)]
    deadline = time.monotonic() + 300
    while len(list(work.glob('ready_*'))) < procs and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)  # client start-up load (and the nodes' discovery of them) has passed
    groups = {**{k: [v] for k, v in node_pids.items()},
              'clients': [c.pid for c in children], 'bench': [os.getpid()]}
    pairs, window = [], IDLE_S
    for r in range(rounds if not service else 1):
        suffix = f'.{r}' if r else ''
        cpu0 = cpu_snapshot(groups, node_pids['scene'])
        idle = rates(dets, diag, cam, max(IDLE_S, window))
        cpu1 = cpu_snapshot(groups, node_pids['scene'])
        n_dets, n_pairs, n_sent, t0 = len(dets), paired(diag), cam.sent, time.monotonic()
        Path(str(go) + suffix).touch()
        while len(list(work.glob(f'done{suffix}_*'))) < procs and time.monotonic() - t0 < 200:
            time.sleep(0.05)
        window = time.monotonic() - t0
        cpu2 = cpu_snapshot(groups, node_pids['scene'])
        loaded = ((len(dets) - n_dets) / window, (paired(diag) - n_pairs) / window,
                  (cam.sent - n_sent) / window)
        pairs.append({'window_s': round(window, 1),
                      'detections_share': [round(idle[0] / idle[2], 3),
                                           round(loaded[0] / loaded[2], 3)],
                      'paired_share': [round(idle[1] / idle[2], 3),
                                       round(loaded[1] / loaded[2], 3)],
                      'cpu_idle': cpu_delta(cpu0, cpu1), 'cpu_loaded': cpu_delta(cpu1, cpu2)})
        print(f'round {r}: {json.dumps(pairs[-1])}', flush=True)
    results, hung = [], 0
    for child in children:
        try:
            out, _ = child.communicate(timeout=120)
            results += [json.loads(line) for line in out.splitlines()]
        except subprocess.TimeoutExpired:
            child.kill()
            hung += 1
    if service:
        for r in results:  # the service client's lines: ok, error, wall_s
            r.update(status=GoalStatus.STATUS_SUCCEEDED if r['ok'] else None,
                     cancel_s=None, growing=True)
    names = {GoalStatus.STATUS_SUCCEEDED: 'succeeded', GoalStatus.STATUS_CANCELED: 'canceled'}
    ends = [names.get(r['status'], 'busy' if r['error'] == 'busy' else
                      f'other: status {r["status"]}, accepted {r.get("accepted")}, '
                      f'{r["error"]}') for r in results]
    walls = [r['wall_s'] for r in results if r['wall_s'] is not None]
    ratio = [p['detections_share'][1] / p['detections_share'][0] for p in pairs
             if p['detections_share'][0]]
    out = {'via': 'service' if service else 'action', 'rounds': len(pairs),
           'goals': len(results), 'hung_processes': hung,
           'outcomes': {e: ends.count(e) for e in set(ends)},
           'cancel_to_canceled_s': summary([r['cancel_s'] for r in results
                                            if r['cancel_s'] is not None and
                                            r['status'] == GoalStatus.STATUS_CANCELED]),
           'busy_wall_s': summary([r['wall_s'] for r in results if r['error'] == 'busy']),
           'wall_max_s': round(max(walls), 1) if walls else None,
           'detections_share_loaded_over_idle_median': round(statistics.median(ratio), 3)
           if ratio else None, 'rounds_detail': pairs,
           'texts_growing': all(r['growing'] for r in results),
           'responses_recovered': sum(r.get('recovered', 0) for r in results),
           'goals_detail': results}
    print('load via the service:' if service else 'load:',
          json.dumps({k: v for k, v in out.items() if k not in ('goals_detail',
                                                                 'rounds_detail')}),
          flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cancels', type=int, default=20)
    ap.add_argument('--procs', type=int, default=10)
    ap.add_argument('--clients', type=int, default=3)
    ap.add_argument('--rounds', type=int, default=4,
                    help='rounds of concurrent goals, each after an idle window')
    ap.add_argument('--params', default='',
                    help='a params file for both nodes, e.g. config/demo.yaml (the MLLM '
                         'describes every frame: busy before the questions too, as in '
                         'test_vqa_load.py)')
    ap.add_argument('--scene-param', action='append', default=[], metavar='KEY=VALUE',
                    help='a scene_node parameter, e.g. scene.nice=0 (repeatable)')
    ap.add_argument('--skip-load', action='store_true')
    ap.add_argument('--compare-service', action='store_true',
                    help='then the same load through the ask_scene service')
    ap.add_argument('--json')
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp(prefix='bench_ask_logs_'))
    params = [args.params] if args.params else []
    scene_params = dict(kv.split('=', 1) for kv in args.scene_param)
    specs = [NodeSpec('perception', NS, params),
             NodeSpec('scene', NS, params,
                      {k: yaml.safe_load(v) for k, v in scene_params.items()})]
    result = {'meta': {'machine': f'{platform.machine()}, {os.cpu_count()} CPUs (shared)',
                       'params': args.params or 'defaults', 'scene_params': scene_params,
                       'load_avg_start': os.getloadavg(), 'start': time.strftime('%F %T')}}
    with NodeGroup(specs, log_dir=logs) as group, RosClient('bench_ask') as ros:
        dets = ros.collect(DetectionArray, f'/{NS}/detections', RESULTS_QOS)
        diag = ros.collect(DiagnosticArray, '/diagnostics', 50)
        cam = Camera(ros)
        pids = {'perception': group.procs[0].pid, 'scene': group.procs[1].pid}
        try:
            if not wait_ready(ros):
                raise SystemExit(f'the graph never answered; logs in {logs}')
            result['cancel'] = cancels(ros, args.cancels)
            if not args.skip_load:
                result['load'] = load(ros, dets, diag, cam, args.procs, args.clients,
                                      args.rounds, pids)
            if args.compare_service:
                result['load_service'] = load(ros, dets, diag, cam, args.procs, args.clients,
                                              1, pids, service=True)
        finally:
            cam.stop()
        result['nodes_alive'] = group.alive()
    result['meta']['load_avg_end'] = os.getloadavg()
    print(json.dumps(result['meta']))
    write_json(args.json, result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
