"""A throwaway PostgreSQL server for tests: initdb into a temporary folder, start it on a
Unix socket only (no TCP), hand out its URL, stop it (immediate) and delete it. Runs the
server as the `postgres` user when the tests run as root (PostgreSQL refuses root).
`scripts/setup.sh` installs PostgreSQL where apt-get may; elsewhere tests that need it are
skipped, saying why."""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def find_bin() -> Path | None:
    for d in sorted(glob.glob('/usr/lib/postgresql/*/bin'), key=lambda p: int(
            p.split('/')[-2]) if p.split('/')[-2].isdigit() else 0, reverse=True):
        if Path(d, 'initdb').is_file() and Path(d, 'pg_ctl').is_file():
            return Path(d)
    initdb = shutil.which('initdb')
    return Path(initdb).parent if initdb and shutil.which('pg_ctl') else None


def unavailable_reason() -> str:
    if find_bin() is None:
        return ('PostgreSQL is not installed (initdb/pg_ctl not found; scripts/setup.sh '
                'installs it with apt-get where it runs as root)')
    if os.geteuid() == 0:
        try:
            pwd.getpwnam('postgres')
        except KeyError:
            return 'running as root and there is no `postgres` user to run the server'
    return ''


@contextmanager
def temporary_postgres():
    """Yields a postgresql:// URL of a fresh, empty server."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bindir = find_bin()
    root = Path(tempfile.mkdtemp(prefix='mr_mllm_pg_'))
    data, sock = root / 'data', root / 'sock'
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam('postgres')
        os.chmod(root, 0o755)
        for p in (root, sock):
            os.chown(p, user.pw_uid, user.pw_gid)
        prefix = ['runuser', '-u', 'postgres', '--']
    port = random.randint(20000, 60000)
    env = dict(os.environ, LC_ALL='C')
    run = lambda *cmd, **kw: subprocess.run(prefix + [str(c) for c in cmd], env=env,  # noqa
                                            capture_output=True, text=True, timeout=120, **kw)
    try:
        r = run(bindir / 'initdb', '-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8')
        if r.returncode:
            raise RuntimeError(f'initdb failed: {r.stderr[-2000:]}')
        r = run(bindir / 'pg_ctl', '-D', data, '-l', root / 'server.log', '-w', '-t', '60',
                '-o', f"-k {sock} -p {port} -c listen_addresses='' -c fsync=off", 'start')
        if r.returncode:
            log = (root / 'server.log').read_text() if (root / 'server.log').exists() else ''
            raise RuntimeError(f'pg_ctl start failed: {r.stderr[-1000:]} {log[-2000:]}')
        yield f'postgresql://postgres@/postgres?host={sock}&port={port}'
    finally:
        if data.exists():
            run(bindir / 'pg_ctl', '-D', data, '-m', 'immediate', '-w', '-t', '30', 'stop')
        shutil.rmtree(root, ignore_errors=True)
