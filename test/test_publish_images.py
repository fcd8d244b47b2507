"""`mr-mllm publish-images` names who listens: a reader whose node's own discovery data
has not arrived yet is named once it does (bounded), and said plainly if it never does."""

import time
from types import SimpleNamespace as NS

from mr_mllm_ros.app import publish_images as pi


def _ros(named_after_calls: int):
    """A client whose second reader's node is unnamed for the first N graph queries."""
    calls = [0]

    def infos(topic):
        calls[0] += 1
        late = calls[0] > named_after_calls
        return [NS(node_namespace='/cam', node_name='perception_node'),
                NS(node_namespace='/cam' if late else '_NODE_NAMESPACE_UNKNOWN_',
                   node_name='scene_node' if late else pi.UNKNOWN_NODE)]
    return NS(node=NS(get_subscriptions_info_by_topic=infos)), calls


def test_an_unnamed_reader_is_named_once_its_node_is_known():
    ros, calls = _ros(named_after_calls=3)
    assert pi._reader_names(ros, '/cam/image', 5.0) == ['/cam/perception_node',
                                                        '/cam/scene_node']
    assert calls[0] == 4


def test_a_reader_never_named_is_said_plainly_within_the_wait():
    ros, _ = _ros(named_after_calls=10**9)
    t0 = time.monotonic()
    names = pi._reader_names(ros, '/cam/image', 0.3)
    assert names == ['/cam/perception_node', 'a node not yet named']
    assert time.monotonic() - t0 < 5.0  # bounded (0.3 s asked)
