"""`mr-mllm publish-images`: a camera made of image files (or the sample photos)."""

from __future__ import annotations

import logging
import time

from sensor_msgs.msg import CompressedImage, Image

from ..core.images import rgb_to_encoding
from ..ros import conversions as conv
from ..ros.client import RosClient
from .image_sources import iter_images
from .launcher import ensure_local_ros_env

log = logging.getLogger(__name__)
COMPRESSED = ('jpeg', 'png')


def image_message(rgb, encoding: str, stamp_ns: int, frame_id: str):
    if encoding in COMPRESSED:
        return conv.compressed_msg(rgb, encoding, stamp_ns, frame_id)
    return conv.image_msg(rgb_to_encoding(rgb, encoding), encoding, stamp_ns, frame_id)


def add_arguments(p) -> None:
    p.add_argument('sources', nargs='+',
                   help='image files, folders, sample:<name> (e.g. sample:camera) or samples')
    p.add_argument('--topic', default='image')
    p.add_argument('--rate', type=float, default=1.0, help='Hz')
    p.add_argument('--frame-id', default='camera')
    p.add_argument('--encoding', default='rgb8',
                   help='rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1, or jpeg/png '
                        '(CompressedImage)')
    p.add_argument('--loop', action='store_true', help='repeat until stopped')
    p.add_argument('--count', type=int, default=0, help='stop after N messages (0 = all)')
    p.add_argument('--wait-subscribers', type=int, default=1, metavar='N',
                   help='before the first image, wait (up to --wait-timeout s) for N '
                        'subscribers, then until their number has been steady for '
                        '--settle s (0 = publish at once)')
    p.add_argument('--wait-timeout', type=float, default=30.0)
    p.add_argument('--settle', type=float, default=3.0,
                   help='seconds the subscriber count must stay unchanged (default 3): a '
                        'graph of several nodes is matched one node at a time, a late one '
                        'up to ~3 s after the first on a busy machine')


def wait_for_readers(ros: RosClient, pub, count: int, timeout_s: float,
                     settle_s: float) -> int:
    """Wait for `count` subscribers, then until their number is steady for `settle_s`
    (all bounded by `timeout_s`), and say who is listening. A photo published once before
    a subscriber has matched is lost (sensor QoS keeps no history): this is what made a
    newcomer's `publish-images photo.jpg` never reach scene_node."""
    topic = pub.topic_name
    log.info('waiting up to %.0f s for %d subscriber(s) on %s', timeout_s, count, topic)
    deadline = time.monotonic() + timeout_s
    if not ros.wait_for_subscribers(pub, count, timeout=timeout_s):
        log.warning('fewer than %d subscriber(s) on %s after %.0f s; publishing anyway',
                    count, topic, timeout_s)
        return pub.get_subscription_count()
    seen, steady_since = pub.get_subscription_count(), time.monotonic()
    while time.monotonic() - steady_since < settle_s and time.monotonic() < deadline:
        time.sleep(0.05)
        now_seen = pub.get_subscription_count()
        if now_seen != seen:
            seen, steady_since = now_seen, time.monotonic()
    log.info('%d subscriber(s) on %s: %s', seen, topic,
             ', '.join(_reader_names(ros, topic, min(NAME_WAIT_S, deadline - time.monotonic()))))
    return seen


#: rmw names a reader's node once that node's own discovery data has arrived, which may
#: come after the reader itself (seen in CI: `_NODE_NAMESPACE_UNKNOWN_/_NODE_NAME_UNKNOWN_`)
UNKNOWN_NODE = '_NODE_NAME_UNKNOWN_'
NAME_WAIT_S = 3.0


def _reader_names(ros: RosClient, topic: str, wait_s: float) -> list[str]:
    """The subscribers' node names, waiting up to `wait_s` for unnamed ones to be named;
    one still unnamed is 'a node not yet named'."""
    end = time.monotonic() + max(0.0, wait_s)
    while True:
        infos = ros.node.get_subscriptions_info_by_topic(topic)
        if all(i.node_name != UNKNOWN_NODE for i in infos) or time.monotonic() >= end:
            break
        time.sleep(0.05)
    return sorted({'a node not yet named' if i.node_name == UNKNOWN_NODE
                   else f'{i.node_namespace.rstrip("/")}/{i.node_name}' for i in infos})


def run(args) -> int:
    ensure_local_ros_env()
    images = list(iter_images(args.sources))
    compressed = args.encoding in COMPRESSED
    topic = args.topic.rstrip('/') + ('/compressed' if compressed
                                      and not args.topic.endswith('compressed') else '')
    with RosClient('image_publisher') as ros:
        pub = ros.publisher(CompressedImage if compressed else Image, topic, 10)
        if args.wait_subscribers > 0:
            wait_for_readers(ros, pub, args.wait_subscribers, args.wait_timeout, args.settle)
        sent = 0
        period = 1.0 / args.rate if args.rate > 0 else 0.0
        next_t = time.monotonic()
        while True:
            for name, rgb in images:
                msg = image_message(rgb, args.encoding, ros.now_ns(), args.frame_id)
                pub.publish(msg)
                sent += 1
                log.info('published %s (%dx%d) on %s', name, rgb.shape[1], rgb.shape[0], topic)
                if args.count and sent >= args.count:
                    return 0
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))
            if not args.loop:
                return 0
