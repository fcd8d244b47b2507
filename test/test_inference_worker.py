"""core.runtime.inference_worker: every model call on one thread, ticks coalesced, jobs bounded and
in order, bugs reported without ending the worker, stop hands back what did not run."""

import threading
import time

from helpers.waiting import wait_until

from mr_mllm_ros.core.runtime.inference_worker import InferenceWorker

WAIT_S = 10.0


def rounds_done(worker, n=2):
    """Wait until the worker has gone `n` rounds past now: a job queued now runs in the
    next round, before any tick still pending; one queued after it, a round later, after
    that tick. So whatever the worker had to do when this was called has run."""
    for _ in range(n):
        done = threading.Event()
        assert worker.submit(done) and done.wait(WAIT_S)


def gated_worker(block_on=None):
    """A started worker whose jobs (all, or only `block_on`) wait for `release`, then
    record themselves in `done`."""
    release, done = threading.Event(), []

    def on_job(job):
        if block_on is None or job == block_on:
            release.wait(WAIT_S)
        done.append(job)

    worker = InferenceWorker('w', lambda: None, on_job)
    worker.start()
    return worker, release, done


def test_ticks_and_jobs_all_run_on_one_thread_that_is_not_the_callers():
    threads = []
    worker = InferenceWorker('w', lambda: threads.append(threading.get_ident()),
                             lambda job: threads.append(threading.get_ident()))
    worker.start()
    try:
        for i in range(20):
            if i % 2:
                worker.tick()
            else:
                assert worker.submit(i)
            # from several caller threads, as the ROS executor's pool would
            t = threading.Thread(target=worker.tick)
            t.start()
            t.join()
            assert wait_until(lambda: len(threads) >= i + 1)
    finally:
        worker.stop()
    assert len(set(threads)) == 1
    assert threads[0] != threading.get_ident()


def test_ticks_while_busy_coalesce_into_one_run():
    release = threading.Event()
    runs = []

    def on_tick():
        runs.append(time.monotonic())
        release.wait(WAIT_S)

    worker = InferenceWorker('w', on_tick, threading.Event.set)
    worker.start()
    try:
        worker.tick()
        assert wait_until(lambda: len(runs) == 1)
        for _ in range(50):  # all while the first run is still going
            worker.tick()
        release.set()
        assert wait_until(lambda: len(runs) == 2)
        rounds_done(worker)  # a third run would have come before the second round's job
        assert len(runs) == 2
    finally:
        worker.stop()


def test_jobs_run_in_arrival_order_and_a_full_queue_refuses():
    worker, release, done = gated_worker(block_on='block')
    try:
        assert worker.submit('block')
        assert wait_until(lambda: worker.pending() == 0)  # taken, now blocking
        assert [worker.submit(i, max_pending=3) for i in range(4)] == [True, True, True, False]
        assert worker.pending() == 3
        release.set()
        assert wait_until(lambda: len(done) == 4)
        assert done == ['block', 0, 1, 2]
    finally:
        worker.stop()


def test_jobs_of_a_round_go_before_the_next_tick_and_a_tick_ends_each_round():
    release = threading.Event()
    order = []

    def on_job(job):
        if job == 0:
            release.wait(WAIT_S)
        order.append(f'job{job}')

    worker = InferenceWorker('w', lambda: order.append('tick'), on_job)
    worker.start()
    try:
        worker.submit(0)                                   # round 1: job0 (blocks)
        assert wait_until(lambda: worker.pending() == 0)
        for i in range(1, 4):                              # arrive during round 1
            worker.submit(i)
        worker.tick()
        release.set()
        assert wait_until(lambda: len(order) == 5)
        # round 1 ends with the tick; round 2 answers the three that were waiting
        assert order == ['job0', 'tick', 'job1', 'job2', 'job3'], order
        worker.tick()                                      # and ticks still run
        assert wait_until(lambda: order.count('tick') == 2)
    finally:
        worker.stop()


def test_a_bug_is_reported_and_the_worker_carries_on():
    errors, done = [], []

    def on_job(job):
        if job == 'bad':
            raise RuntimeError('boom')
        done.append(job)

    worker = InferenceWorker('w', lambda: None, on_job, on_error=errors.append)
    worker.start()
    try:
        worker.submit('bad')
        worker.submit('good')
        assert wait_until(lambda: done == ['good'])
        assert worker.running
        assert len(errors) == 1 and 'boom' in str(errors[0])
    finally:
        worker.stop()


def test_stop_returns_the_jobs_that_did_not_run_and_a_restart_works():
    worker, release, done = gated_worker()
    worker.submit('first')
    assert wait_until(lambda: worker.pending() == 0)
    worker.submit('second')
    worker.submit('third')
    release.set()
    left = worker.stop()
    assert not worker.running
    assert 'first' in done
    assert sorted(done + left) == ['first', 'second', 'third']
    # activate again after deactivate
    worker.start()
    try:
        worker.submit('again')
        assert wait_until(lambda: 'again' in done)
    finally:
        worker.stop()


def test_drain_hands_back_queued_jobs_and_keeps_the_thread():
    worker, release, done = gated_worker()
    try:
        worker.submit('running')
        assert wait_until(lambda: worker.pending() == 0)
        worker.submit('queued')
        assert worker.drain() == ['queued']  # a deactivate answers these itself
        release.set()
        assert wait_until(lambda: done == ['running'])
        assert worker.running
        worker.submit('next')
        assert wait_until(lambda: done == ['running', 'next'])
    finally:
        worker.stop()


def test_stop_ends_an_idle_worker():
    worker = InferenceWorker('w', lambda: None)
    worker.start()
    assert worker.running
    assert worker.stop() == []
    assert not worker.running  # joined, not left behind after the join timeout


def test_paused_waits_for_the_call_in_flight_and_holds_new_ones():
    started, release = threading.Event(), threading.Event()
    log = []

    def on_tick():
        log.append('start')
        started.set()
        release.wait(WAIT_S)
        log.append('end')

    worker = InferenceWorker('w', on_tick)
    worker.start()
    try:
        worker.tick()
        assert started.wait(WAIT_S)
        started.clear()
        threading.Timer(0.3, release.set).start()
        with worker.paused():
            log.append('paused')      # only after the tick in flight ended
            worker.tick()
            # The worker is free to run the new tick at once, and must not while paused:
            # given 0.3 s to do it wrongly, it does not start.
            assert not started.wait(0.3)
            log.append('resumed')
        assert wait_until(lambda: log.count('end') == 2)
        assert log == ['start', 'end', 'paused', 'resumed', 'start', 'end']
    finally:
        worker.stop()


def test_nodes_make_openmp_workers_sleep_unless_the_user_chose():
    from mr_mllm_ros.core.runtime.cpu_threads import apply_inference_env
    env = {}
    apply_inference_env(env)
    assert env['OMP_WAIT_POLICY'] == 'PASSIVE'
    env = {'OMP_WAIT_POLICY': 'ACTIVE'}  # a launch file's choice wins
    apply_inference_env(env)
    assert env['OMP_WAIT_POLICY'] == 'ACTIVE'
