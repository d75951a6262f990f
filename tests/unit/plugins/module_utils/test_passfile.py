# -*- coding: utf-8 -*-
"""postgres.passfile: a libpq program gets its password from a password file of its own, never from its
environment, and the file is gone when the program is (finished, failed, killed)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import struct
import sys
import tempfile
import threading

import pytest

from ansible_collections.fediflow.dr.plugins.module_utils import common, postgres
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

# ':' and '\' must be escaped in the file; a password that needs it shows the escaping is libpq's
# (a token of its own, not the pid: ansible-test runs each test in a forked process whose pid differs)
TOKEN = os.urandom(4).hex()
PASSWORD = "s3cr:et\\pw-" + TOKEN
# prints the child's own environment and what it finds at PGPASSFILE (path, modes, content)
SHOW = ("import json, os, stat; p = os.environ.get('PGPASSFILE', ''); "
        "st = os.stat(p) if p else None; dst = os.stat(os.path.dirname(p)) if p else None; "
        "print(json.dumps({'environ': open('/proc/self/environ', 'rb').read().decode(errors='replace'), 'path': p, "
        "'mode': stat.S_IMODE(st.st_mode) if st else None, 'dir_mode': stat.S_IMODE(dst.st_mode) if dst else None, "
        "'uid': st.st_uid if st else None, 'dir_uid': dst.st_uid if dst else None, "
        "'content': open(p).read() if p else ''}))")


def _params(**kw):
    params = {k: v.get("default") for k, v in postgres.postgres_common_argument_spec().items()}
    params.update(login_host="127.0.0.1", login_password=PASSWORD)
    params.update(kw)
    return params


def _leftovers():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "fediflow-pgpass-*")))


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The passfiles of this test go to a temporary directory of its own: other tests running at the same time
    (pytest-xdist workers) write theirs to the shared /tmp, and a count of leftovers there would see them."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _show(params, user=None, parent_env=None, monkeypatch=None):
    import json  # pylint: disable=import-outside-toplevel
    if parent_env:
        for key, value in parent_env.items():
            monkeypatch.setenv(key, value)
    with postgres.passfile(params, user=user) as env:
        # another OS user may not enter this virtualenv: the system's Python then
        python = sys.executable if not user else (shutil.which("python3", path="/usr/bin:/bin") or sys.executable)
        res = common.run([python, "-c", SHOW], user=user, env=env, timeout=30)
    assert res.rc == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.usefixtures("private_tmp")
def test_the_child_environment_holds_no_password_even_one_inherited(monkeypatch):
    before = _leftovers()
    # a PGPASSWORD in the module's own environment would win over the file in libpq, and leak: unset
    seen = _show(_params(), parent_env={"PGPASSWORD": "inherited-" + PASSWORD}, monkeypatch=monkeypatch)
    assert PASSWORD not in seen["environ"]
    assert "PGPASSWORD" not in seen["environ"]
    assert "PGPASSFILE=%s" % seen["path"] in seen["environ"].split("\0")
    assert seen["mode"] == 0o600 and seen["dir_mode"] == 0o700
    assert seen["uid"] == os.geteuid() and seen["dir_uid"] == os.geteuid()
    assert seen["content"] == "*:*:*:*:s3cr\\:et\\\\pw-" + TOKEN + "\n"
    assert not os.path.exists(seen["path"]) and not os.path.exists(os.path.dirname(seen["path"]))
    assert _leftovers() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file owned by another OS user needs root")
def test_the_file_belongs_to_the_os_user_that_runs_the_program():
    try:
        other = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres OS user on this machine")
    seen = _show(_params(), user="postgres")
    assert seen["uid"] == other.pw_uid and seen["dir_uid"] == other.pw_uid
    assert seen["mode"] == 0o600 and seen["dir_mode"] == 0o700
    assert PASSWORD not in seen["environ"]
    assert not os.path.exists(os.path.dirname(seen["path"]))


@pytest.mark.usefixtures("private_tmp")
def test_the_file_is_gone_after_a_failure_an_exception_and_a_kill():
    before = _leftovers()
    with postgres.passfile(_params()) as env:
        path = env["PGPASSFILE"]
        res = common.run([sys.executable, "-c", "import sys; sys.exit(3)"], env=env, timeout=30)
    assert res.rc == 3 and not os.path.exists(path)
    with pytest.raises(RuntimeError):
        with postgres.passfile(_params()) as env:
            path = env["PGPASSFILE"]
            raise RuntimeError("the program's caller failed")
    assert not os.path.exists(os.path.dirname(path))
    # killed at its time-out while it runs
    with pytest.raises(FediflowError, match="did not finish within"):
        with postgres.passfile(_params()) as env:
            path = env["PGPASSFILE"]
            common.run([sys.executable, "-c", "import time; time.sleep(30)"], env=env, timeout=0.5)
    assert not os.path.exists(os.path.dirname(path))
    assert _leftovers() == before


@pytest.mark.usefixtures("private_tmp")
def test_no_password_writes_nothing_and_a_line_break_is_refused():
    before = _leftovers()
    with postgres.passfile(_params(login_password="")) as env:
        assert "PGPASSFILE" not in env and "PGPASSWORD" not in env
    assert _leftovers() == before
    with pytest.raises(FediflowError, match="login_password holds a line break"):
        with postgres.passfile(_params(login_password="a\nb")):
            pass
    assert _leftovers() == before


class _PasswordCatcher:
    """A TCP listener speaking just enough of PostgreSQL's protocol to ask for a clear-text password
    (what a server with `password` authentication does), record it and refuse the login. While the
    client waits for the answer, its /proc/PID/environ is read (the client is found by its PGPASSFILE)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.password = None
        self.client_environ = []
        self.passfile = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read(self, conn, size):
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _serve(self):
        conn = self.sock.accept()[0]
        with conn:
            conn.settimeout(20)
            while True:
                length, code = struct.unpack("!ii", self._read(conn, 8))
                body = self._read(conn, length - 8)
                if code in (80877103, 80877104):  # SSLRequest / GSSENCRequest: not here
                    conn.sendall(b"N")
                    continue
                break  # the startup message
            assert code == 196608, code
            conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            kind = self._read(conn, 1)
            length = struct.unpack("!i", self._read(conn, 4))[0]
            payload = self._read(conn, length - 4)
            for env_path in glob.glob("/proc/[0-9]*/environ"):
                try:
                    with open(env_path, "rb") as handle:
                        text = handle.read().decode(errors="replace")
                except OSError:
                    continue
                if self.passfile and ("PGPASSFILE=%s" % self.passfile) in text.split("\0"):
                    self.client_environ.append(text)
            if kind == b"p":
                self.password = payload.rstrip(b"\0").decode()
            message = b"SFATAL\0C28P01\0Mpassword authentication failed (test listener)\0\0"
            conn.sendall(b"E" + struct.pack("!i", len(message) + 4) + message)


@pytest.mark.usefixtures("private_tmp")
def test_a_real_libpq_program_reads_the_password_from_the_file_not_its_environment():
    psql = os.path.join(postgres_bindir(), "psql")
    catcher = _PasswordCatcher()
    before = _leftovers()
    params = _params(login_port=catcher.port, ssl_mode="disable", login_user="fediflow_test")
    with postgres.passfile(params) as env:
        catcher.passfile = env["PGPASSFILE"]
        res = common.run([psql, "--no-password", "-c", "SELECT 1"], env=env, timeout=30)
    catcher.thread.join(10)
    assert res.rc != 0 and "password authentication failed" in res.stderr
    assert catcher.password == PASSWORD          # libpq found it in the file, escapes undone
    assert catcher.client_environ, "the running psql was not found by its PGPASSFILE"
    assert all(PASSWORD not in text for text in catcher.client_environ)
    assert PASSWORD not in " ".join(res.argv)
    assert _leftovers() == before


def postgres_bindir():
    from ansible_collections.fediflow.dr.plugins.module_utils import pgctl  # pylint: disable=import-outside-toplevel
    try:
        return pgctl.find_bindir(None)
    except FediflowError:
        pytest.skip("no PostgreSQL client programs on this machine")
