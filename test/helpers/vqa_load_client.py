"""One client process of the VQA load test (test_vqa_load.py): waits for a go-file, then
sends N ask_scene requests at once (after writing READY_DIR/ready_<pid>) through one RosClient and prints one JSON line per
request: {"ok": bool, "error": str, "latency_s": node's figure, "wall_s": ours}. Exits
when every request has a response or its own timeout (+ slack) has passed."""

import json
import os
import sys
import threading
import time

from mr_mllm_interfaces.srv import AskScene
from mr_mllm_ros.core.runtime.leftover_threads import exit_process
from mr_mllm_ros.ros.client import RosClient


def main() -> int:
    service, calls, timeout, go_file, ready_dir = sys.argv[1], int(sys.argv[2]), \
        float(sys.argv[3]), sys.argv[4], sys.argv[5]
    with RosClient(f'vqa_load_{os.getpid()}') as ros:
        client = ros.service_client(AskScene, service)
        if not client.wait_for_service(timeout_sec=60.0):
            print(json.dumps({'ok': False, 'error': 'service not found'}))
            return 3
        # wait_for_service says our requests reach the server, not that its responses
        # reach us: until the server's writer has matched our reader, a response is lost
        # (seen in CI: 3 of 50 'no response' under load). An empty question is refused at
        # once, without the MLLM: its reply proves the way back.
        for _ in range(20):
            ping = client.call_async(AskScene.Request(question='', timeout_s=1.0))
            limit = time.monotonic() + 3.0
            while not ping.done() and time.monotonic() < limit:
                time.sleep(0.02)
            if ping.done():
                break
        else:
            print(json.dumps({'ok': False, 'error': 'no reply to an empty question'}))
            return 3
        open(os.path.join(ready_dir, f'ready_{os.getpid()}'), 'w').close()
        deadline = time.monotonic() + 120.0
        while not os.path.exists(go_file) and time.monotonic() < deadline:
            time.sleep(0.02)
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
