"""One client process of the VQA load test (test_vqa_load.py): writes READY_DIR/ready_<pid>
once a reply has come back, waits for a go-file, then sends N ask_scene requests at once
through one RosClient and prints one JSON line per request: {"ok": bool, "error": str,
"latency_s": node's figure, "wall_s": ours}. Exits when every request has a response or
its own timeout (+ slack) has passed."""

import json
import os
import sys
import threading
import time

from mr_mllm_interfaces.srv import AskScene
from mr_mllm_ros.core.runtime.cpu_threads import lower_group_priority
from mr_mllm_ros.core.runtime.leftover_threads import exit_process
from mr_mllm_ros.ros.client import RosClient, ServiceNotFound, ServiceTimeout
# this script's folder (test/helpers) is on sys.path
from graph_helpers import open_ask_route
from waiting import wait_until


def main() -> int:
    service, calls, timeout, go_file, ready_dir = sys.argv[1], int(sys.argv[2]), \
        float(sys.argv[3]), sys.argv[4], sys.argv[5]
    # These processes stand for users elsewhere on the network; here they share the
    # robot's 2 cores. Started in a session of their own (an autogroup of their own), they
    # yield the CPU to the nodes as scene_node's MLLM does (scene.nice).
    lower_group_priority(10)
    with RosClient(f'vqa_load_{os.getpid()}') as ros:
        try:
            open_ask_route(ros, service)
        except (ServiceNotFound, ServiceTimeout) as e:
            print(json.dumps({'ok': False, 'error': str(e)}))
            return 3
        client = ros.service_client(AskScene, service)
        open(os.path.join(ready_dir, f'ready_{os.getpid()}'), 'w').close()
        wait_until(lambda: os.path.exists(go_file), 120.0, 0.02)
        t0 = time.monotonic()
        futures = [client.call_async(AskScene.Request(
            question=f'Question {i} from {os.getpid()}: what is here?', timeout_s=timeout))
            for i in range(calls)]
        done = threading.Semaphore(0)
        wall = {}
        for i, f in enumerate(futures):
            f.add_done_callback(lambda _, i=i: (wall.__setitem__(i, time.monotonic() - t0),
                                                done.release()))
        end = t0 + timeout + 10.0
        for _ in futures:
            done.acquire(timeout=max(0.0, end - time.monotonic()))
        # every response is in: the test's measuring window ends here, not at our exit
        open(os.path.join(ready_dir, f'done_{os.getpid()}'), 'w').close()
        for i, f in enumerate(futures):
            if not f.done():
                print(json.dumps({'ok': False, 'error': 'no response', 'wall_s': None}))
                continue
            r = f.result()
            print(json.dumps({'ok': r.success, 'error': r.error, 'latency_s': r.latency_s,
                              'wall_s': wall[i]}))
    return 0


if __name__ == '__main__':
    exit_process(main())
