"""Helpers shared by the graph tests (separate node processes, localhost, random domain)."""

import time

from mr_mllm_interfaces.srv import AskScene
from mr_mllm_ros.ros import conversions as conv

DISCOVERY_S = 30.0  # generous: late joiners need 2.6-3.3 s here, model loads a few more
RESULT_S = 60.0


def stamp_is(stamp: int):
    return lambda m: conv.stamp_to_ns(m.header.stamp) == stamp


def publish_and_wait(ros, pub, replies, msg, timeout=RESULT_S):
    """Publish `msg` (again every 2 s) until a reply with the same stamp arrives."""
    return ros.request_reply(pub, msg, replies, stamp_is(conv.stamp_to_ns(msg.header.stamp)),
                             timeout)


def first_exchange(pub, make_msg, replies, timeout=RESULT_S, every=2.0, start=0,
                   match=None):
    """Publish make_msg(stamp) with a fresh stamp (start + 1, + 2, ...) every `every` s until the
    reply to the newest one arrives; returns it (None on timeout). For the first exchange
    of a test whose node answers each stamp once (it ignores a stamp it has seen): a reply
    published before the node's writer had matched our reader is lost, and re-sending the
    same stamp would not bring another. Waiting for the newest stamp's reply leaves no
    older frame pending in the node. `match(msg)`: what else the reply must satisfy."""
    deadline = time.monotonic() + timeout
    stamp = start
    while time.monotonic() < deadline:
        stamp += 1
        wanted = stamp_is(stamp)
        pub.publish(make_msg(stamp))
        reply = replies.wait_for(lambda m, w=wanted: w(m) and (match is None or match(m)),
                                 min(every, deadline - time.monotonic()))
        if reply is not None:
            return reply
    return None


def open_ask_route(ros, service, timeout=60.0):
    """Make sure `ros` gets ask_scene's responses before a test relies on one:
    wait_for_service proves the way to the server, not the way back, and the server drops
    a response to a client reader it has not matched yet (seen in CI: 3 of 50 'no
    response' under load). An empty question is refused at once, without the MLLM, so it
    is safe to resend until a reply comes. Returns that reply (success False, an error)."""
    return ros.call(AskScene, service, AskScene.Request(question='', timeout_s=1.0),
                    timeout=timeout, wait_service_s=timeout, resend_s=3.0)


def node_status(diag, node_path, predicate, timeout=15.0, start=0):
    """(status, values) of the first /diagnostics entry of `node_path` (e.g.
    '/cam/perception_node') that satisfies predicate(status, values), among those received
    from index `start` on (len(diag) at some moment = only later ones); None on timeout."""
    def find(msg):
        for st in msg.status:
            if st.name.startswith(node_path + ':'):
                values = {kv.key: kv.value for kv in st.values}
                if predicate(st, values):
                    return st, values
        return None

    msg = diag.wait_for(lambda m: find(m) is not None, timeout, start=start)
    return None if msg is None else find(msg)


def latest_status(diag, node_path):
    """(status, values) of the newest /diagnostics entry of `node_path` received so far."""
    got = latest_stamped_status(diag, node_path)
    return None if got is None else got[1:]


def latest_stamped_status(diag, node_path):
    """(the node's stamp of it in s, status, values) of the newest /diagnostics entry of
    `node_path`: rates taken between two entries' own stamps do not depend on when the
    test read them."""
    for msg in reversed(diag.snapshot()):
        for st in msg.status:
            if st.name.startswith(node_path + ':'):
                return (conv.stamp_to_ns(msg.header.stamp) * 1e-9, st,
                        {kv.key: kv.value for kv in st.values})
    return None
