# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plumbing shared by every fediflow.dr module: timing, running programs, errors.

Plain Python, importable without Ansible running, so pytest can call it directly.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time


class FediflowError(Exception):
    """A failure a person can act on. ``message`` is one line and never holds a secret."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class Timer:
    """Monotonic stopwatch with named phases: ``with timer.phase('dump'): ...``."""

    def __init__(self):
        self.start = time.monotonic()
        self.phases = {}

    def elapsed(self):
        return round(time.monotonic() - self.start, 3)

    def phase(self, name):
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer, name):
        self.timer = timer
        self.name = name
        self.t0 = 0.0

    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        spent = time.monotonic() - self.t0
        self.timer.phases[self.name] = round(self.timer.phases.get(self.name, 0.0) + spent, 3)
        return False


# Every file and directory a module creates (backups, manifests, ledgers, downloads, reports, results, temporary
# files) and every program it starts is private to the owner: 0600 / 0700 when created, never readable by
# others in between. (Explicit modes stay explicit: a restored snapshot file gets the mode it was saved with.)
PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def private_umask():
    """``with private_umask(): ...``: the process umask is PRIVATE_UMASK inside (the programs started there
    inherit it), the previous one afterwards."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


class CommandResult:
    def __init__(self, argv, rc, stdout, stderr, duration_s):
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.duration_s = duration_s

    def as_dict(self, secrets=()):
        return {
            "argv": redact(self.argv, secrets),
            "rc": self.rc,
            "duration_s": self.duration_s,
        }


def require_readable_file(path, option):
    """Refuse (naming the option) a path that is not a file this process can read; empty means unset."""
    if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise FediflowError("%s %s is not a readable file" % (option, path))


def current_user():
    return pwd.getpwuid(os.geteuid()).pw_name


def as_user(argv, user):
    """Prefix ``argv`` with ``runuser`` when root must run it as another OS user.

    PostgreSQL's programs refuse to run as root; the collection runs them as the
    cluster's owner. No shell is involved: ``runuser -u USER -- prog args...``.
    """
    if not user or user == current_user():
        return list(argv)
    if os.geteuid() != 0:
        raise FediflowError(
            "cannot run %s as OS user '%s': not running as root and not that user"
            % (os.path.basename(argv[0]), user))
    return ["runuser", "-u", user, "--"] + list(argv)


def run(argv, user=None, env=None, timeout=None, cwd=None, input_text=None, kill_group=False):
    """Run a program from an argument list (never a shell) and capture its output.

    ``env`` entries are added to the current environment (an entry whose value is None is removed from
    it); a password reaches a libpq program through a password file (``postgres.passfile``: E(PGPASSFILE)),
    never a process list or the child's environment.

    ``kill_group``: the program runs in a session of its own and a time-out kills that whole process
    group. For programs that start others (an operator's script): killing only the program would leave
    its children running, holding its output open, and the wait for that output would outlast the
    time-out.
    """
    full = as_user(argv, user)
    run_env = dict(os.environ)
    if env:
        for key, value in env.items():
            if value is None:
                run_env.pop(key, None)
            else:
                run_env[key] = str(value)
    if user and user != current_user():
        # the target user must be able to read its working directory
        cwd = cwd or "/"
    t0 = time.monotonic()
    try:
        if kill_group:
            rc, stdout, stderr = _run_own_group(full, run_env, cwd, input_text, timeout)
        else:
            proc = subprocess.run(full, env=run_env, cwd=cwd, input=input_text,
                                  capture_output=True, text=True, timeout=timeout, check=False)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except FileNotFoundError:
        raise FediflowError("program not found: %s" % full[0])
    except subprocess.TimeoutExpired:
        raise FediflowError("%s did not finish within %ss%s" % (os.path.basename(argv[0]), timeout,
                                                                " (killed, with the processes it started)" if kill_group else ""))
    return CommandResult(full, rc, stdout, stderr, round(time.monotonic() - t0, 3))


def _run_own_group(argv, env, cwd, input_text, timeout):
    """``run`` with ``kill_group``: (rc, stdout, stderr); on a time-out the process group is killed
    (SIGKILL) and TimeoutExpired raised."""
    with subprocess.Popen(argv, env=env, cwd=cwd, text=True, start_new_session=True,
                          stdin=subprocess.DEVNULL if input_text is None else subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            stdout, stderr = proc.communicate(input_text, timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                # a child that left the group (setsid) still holds the output: stop reading it
                proc.kill()
            raise
    return proc.returncode, stdout, stderr


def mask(text, secrets=()):
    """``text`` (made a string) with every non-empty secret replaced by ``********``."""
    text = str(text)
    for secret in secrets:
        if secret:
            text = text.replace(str(secret), "********")
    return text


def redact(argv, secrets=()):
    """Return a copy of ``argv`` with every secret (and ``password=`` values) masked."""
    out = []
    for arg in argv:
        text = mask(arg, secrets)
        if "password=" in text:
            parts = text.split(" ")
            text = " ".join("password=********" if p.startswith("password=") else p for p in parts)
        out.append(text)
    return out


def last_lines(text, count=5):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def wait_until(predicate, timeout, interval=0.1, max_interval=1.0):
    """Poll ``predicate()`` until it returns a truthy value or ``timeout`` seconds pass.

    Returns ``(value, waited_s)``; ``value`` is the last result (falsy on time-out).
    The interval grows to ``max_interval`` so a slow condition is not hammered.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, max_interval)
        value = predicate()
    return value, round(time.monotonic() - t0, 3)


def backoff_delay(attempt, base=0.5, cap=8.0):
    """Exponential back-off: the wait after attempt number ``attempt`` (1, 2, ...): base, 2*base, 4*base ... at
    most ``cap`` seconds."""
    return min(cap, base * 2 ** max(0, attempt - 1))


class Retried:
    """What ``retry`` did: ``ok``; ``value`` (the call's answer) or ``error`` (the last exception); ``attempts``;
    ``stopped``: None (it worked), "final" (an error that is not retried), "attempts" or "deadline" (gave up)."""

    def __init__(self):
        self.ok, self.value, self.error, self.attempts, self.stopped = False, None, None, 0, None

    def get(self):
        """The call's answer, or the last error raised again."""
        if not self.ok:
            raise self.error
        return self.value


def _instance_of(classes):
    return lambda exc: isinstance(exc, classes)


def retry(call, attempts=None, deadline=None, retryable=Exception, backoff=None, sleep=time.sleep,
          clock=time.monotonic):
    """Call ``call()`` until it returns, raises an error that is not retryable, or the attempts or the deadline are
    used up; a ``Retried`` back (never raises what ``call`` raised: ``.get()`` does, ``.error`` holds it).

    ``attempts``: at most that many calls (None: no limit). ``deadline``: a ``clock()`` time (monotonic) after which
    no call starts, and no wait is begun that would end past it (None: no limit; give at least one of the two).
    The first call is always made. ``retryable``: an exception class (or tuple) that is retried, or a predicate
    ``retryable(exc)``; other exceptions stop at once (``stopped == "final"``). ``backoff(attempt, exc)``: seconds to
    wait after the attempt-th failed call (default: ``backoff_delay(attempt)``; an answer that says when
    to try again, like HTTP Retry-After, is honoured by a backoff that reads it).

    Waiting for a condition to become true is ``wait_until``; this is for an operation that fails and may work
    when tried again."""
    if attempts is None and deadline is None:
        raise ValueError("retry needs attempts or a deadline")
    if isinstance(retryable, (type, tuple)):
        retryable = _instance_of(retryable)
    out = Retried()
    while True:
        out.attempts += 1
        try:
            out.value, out.ok = call(), True
            return out
        except Exception as exc:  # pylint: disable=broad-except
            out.error = exc
            if not retryable(exc):
                out.stopped = "final"
                return out
        if attempts is not None and out.attempts >= attempts:
            out.stopped = "attempts"
            return out
        delay = backoff(out.attempts, out.error) if backoff else backoff_delay(out.attempts)
        if deadline is not None and clock() + delay >= deadline:
            out.stopped = "deadline"
            return out
        if delay > 0:
            sleep(delay)
