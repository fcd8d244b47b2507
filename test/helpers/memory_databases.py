"""The two databases every memory test runs on: a SQLite file and a real PostgreSQL
server the tests start themselves (helpers.postgres_server). conftest.py offers the
fixtures `pg_url` and `url` to every test; a test taking `url` runs on both."""

import pytest

from helpers.postgres_server import temporary_postgres, unavailable_reason
from mr_mllm_ros.core.memory.store import Database

PG_REASON = unavailable_reason()


@pytest.fixture(scope='module')
def pg_url():
    if PG_REASON:
        pytest.skip(PG_REASON)
    with temporary_postgres() as url:
        yield url


@pytest.fixture(params=['sqlite', 'postgresql'])
def url(request, tmp_path):
    if request.param == 'sqlite':
        return str(tmp_path / 'memory.db')
    pg = request.getfixturevalue('pg_url')
    Database(pg, create=False).drop_all()  # each test starts from an empty database
    return pg
