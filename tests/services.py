"""Throwaway services for tests: a PostgreSQL server on 127.0.0.1, started and stopped by the test session.

The server binaries come from Debian's ``postgresql`` package (``.ci/run`` installs it). Without
them a test that needs the server fails under CI (``CI=true``) and is skipped, with the reason, on a
developer machine.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run this test: .ci/run installs PostgreSQL)")
    pytest.skip(reason)


@contextmanager
def postgres_server():
    """Yield a SQLAlchemy URL of a fresh PostgreSQL server whose default collation is ICU English.

    English collation orders 'a' before 'B', unlike a byte-wise comparison: ranking code that
    relied on the database's default order would fail the tests here.
    """
    bindir = _bindir()
    if bindir is None:
        _missing("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="leadtemp-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en"],
                   check=True, capture_output=True)
    options = f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off"
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w",
                    "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
