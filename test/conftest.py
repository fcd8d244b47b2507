"""Test-wide environment: nothing leaves this machine, parallel runs never meet.

Set before anything imports rclpy, ultralytics or transformers: ROS discovery stays on
localhost, each session gets its own random ROS domain, and model libraries are offline.
"""

import os
import random

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
# Always random (not setdefault): a developer's exported domain may be a live robot's.
os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(1, 101))

from mr_mllm_ros.app.launcher import clean_dds_shm, ensure_local_ros_env  # noqa: E402
from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()
ensure_local_ros_env()  # + the shipped Fast DDS large-image profile for this process
# Shared-memory ports left by participants that were killed (earlier runs, crashes) can
# swallow every sample sent to a new participant that gets the same port number.
clean_dds_shm()

from helpers import hand_labels  # noqa: E402

# `url` (SQLite and a real PostgreSQL server) and `pg_url`, for the memory tests
from helpers.memory_databases import pg_url, url  # noqa: E402, F401


@pytest.fixture(scope='session')
def labels():
    return hand_labels()


@pytest.fixture(scope='session')
def default_config():
    from mr_mllm_ros.core.config import load_config
    return load_config()
