"""Latest-frame intake: O(1) put, newest wins, drops counted, cameras served fairly."""

import threading

from mr_mllm_ros.core.runtime.latest_slot import LatestSlots
from mr_mllm_ros.core.runtime.stats import RollingStats


def test_newest_wins_and_drops_are_counted():
    s = LatestSlots()
    for i in range(5):
        s.put('cam', i)
    assert s.take() == ('cam', 4)
    assert s.take() is None
    assert (s.received, s.dropped) == (5, 4)


def test_cameras_are_served_round_robin():
    s = LatestSlots()
    s.put('a', 1)
    s.put('b', 1)
    s.put('a', 2)  # keeps a's place in the queue
    assert [s.take()[0], s.take()[0]] == ['a', 'b']
    s.put('b', 3)
    s.put('a', 3)
    assert s.take() == ('b', 3)


def test_no_growth_under_concurrent_producers():
    s = LatestSlots()

    def produce(cam):
        for i in range(2000):
            s.put(cam, i)

    threads = [threading.Thread(target=produce, args=(c,)) for c in 'abcd']
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.pending() == 4
    assert s.received == 8000 and s.dropped == 8000 - 4


def test_rolling_stats():
    st = RollingStats(window=10)
    for i in range(20):
        st.add(float(i), now=100.0 + i * 0.1)
    assert st.count == 20
    assert st.percentile(50) == 14.5  # only the last 10 values are kept
    assert abs(st.rate_hz(now=102.0, horizon_s=5.0) - 10.0) < 1.0
