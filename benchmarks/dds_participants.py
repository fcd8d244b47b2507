"""Many DDS participants on one host with the shipped Fast DDS profile: do they all see
each other, and do topics and services still work?

    bash scripts/with_env.sh python benchmarks/dds_participants.py [--n 50] [--wave 0]

Starts N processes, each one RosClient node that answers a std_srvs/Trigger service and
echoes a std_msgs/String topic; then, from this process (participant N+1), publishes to
the last one and calls its service, and counts the Fast DDS shared-memory errors
("Failed init_port ... open_and_lock_file failed") the processes printed. `--wave K`
starts them K at a time (0: all at once). Every process is stopped before it returns.
Why: docs/RELIABILITY.md#many-participants.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mr_mllm_ros.app.launcher import ensure_local_ros_env  # noqa: E402

ensure_local_ros_env()

CHILD = '''
import sys, time
from std_msgs.msg import String
from std_srvs.srv import Trigger
from mr_mllm_ros.ros.client import RosClient
i = int(sys.argv[1])
with RosClient(f"part_{i}") as ros:
    pub = ros.publisher(String, f"/part_{i}/out", 10)
    ros.node.create_subscription(String, f"/part_{i}/in", lambda m: pub.publish(m), 10)
    ros.node.create_service(Trigger, f"/part_{i}/trigger",
                            lambda req, res: (setattr(res, "success", True), res)[1])
    print("up", flush=True)
    time.sleep(float(sys.argv[2]))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=50)
    ap.add_argument('--wave', type=int, default=0, help='start K at a time (0: all at once)')
    ap.add_argument('--life-s', type=float, default=180.0)
    ap.add_argument('--discovery-s', type=float, default=60.0,
                    help='how long the probe waits to see every node before it tests')
    args = ap.parse_args()
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from mr_mllm_ros.ros.client import RosCallError, RosClient
    print(f'{args.n} participants, profile {os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")},'
          f' load {os.getloadavg()[0]:.1f}', flush=True)
    procs: list[subprocess.Popen] = []
    t0 = time.monotonic()
    try:
        wave = args.wave or args.n
        for start in range(0, args.n, wave):
            batch = [subprocess.Popen([sys.executable, '-c', CHILD, str(i), str(args.life_s)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for i in range(start, min(args.n, start + wave))]
            procs += batch
            for p in batch:  # a wave is up when each child said so
                p.stdout.readline()
        up_s = time.monotonic() - t0
        last = args.n - 1
        with RosClient('participants_probe') as ros:
            t_probe = time.monotonic()
            while len(ros.node.get_node_names()) < args.n + 1 and \
                    time.monotonic() - t_probe < args.discovery_s:
                time.sleep(0.2)
            seen = len(ros.node.get_node_names())
            seen_s = time.monotonic() - t_probe
            back = ros.collect(String, f'/part_{last}/out', 10)
            pub = ros.publisher(String, f'/part_{last}/in', 10)
            ok_topic = ros.wait_for_subscribers(pub, 1, 30)
            got = None
            for _ in range(10):
                pub.publish(String(data='ping'))
                got = back.wait_for(lambda m: True, 2.0)
                if got:
                    break
            try:
                ok_service = ros.call(Trigger, f'/part_{last}/trigger', Trigger.Request(),
                                      timeout=10, wait_service_s=30).success
            except RosCallError as e:
                ok_service = f'failed: {e}'
    finally:
        for p in procs:
            p.terminate()
        errors = 0
        for p in procs:
            try:
                _, err = p.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate(timeout=10)
            errors += 'open_and_lock_file failed' in err
    print(f'all up after {up_s:.1f} s; a newcomer saw {seen} of {args.n + 1} nodes after '
          f'{seen_s:.1f} s; '
          f'topic to the last: {"ok" if ok_topic and got else "FAILED"}; service on the last: '
          f'{ok_service}; processes with SHM port errors: {errors}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
