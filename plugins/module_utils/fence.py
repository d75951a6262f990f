# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``command`` fence method (module ``fence_command``): an operator's fence program, then the
operator's verify program as the proof.

A fence stands between an old primary that cannot be reached and the promotion of its standby, so
only what was proven counts: the fence program exiting 0 and, when a verify program is given, that
program exiting 0 within its deadline (polled: a power switch or a cloud API takes a moment). The
programs run from argument lists (no shell), with their secrets in the environment, never on a
command line; a program that does not finish in time is killed with every process it started.
"""

from __future__ import annotations

import os
import shutil

from ansible_collections.fediflow.dr.plugins.module_utils.common import (
    FediflowError, Timer, last_lines, mask, redact, run, wait_until)

# what to do when the old primary is not proven fenced (the failover refuses to promote)
NEXT = ("the old primary is NOT proven fenced: fix the fence (docs/fencing.md) and run the failover again, "
        "or, once you know it is down, assert it with -e source_confirmed_down=true")


def check_argv(argv, option, required=True):
    """Refuse an argument list that is not a non-empty list of non-empty strings (naming ``option``)."""
    if argv is None or (not required and list(argv) == []):
        if required:
            raise FediflowError("%s is required: the program and its arguments, as a list" % option)
        return
    if isinstance(argv, str) or not isinstance(argv, (list, tuple)) or not argv:
        raise FediflowError("%s must be a non-empty list (the program and its arguments; no shell)" % option)
    bad = [i for i, arg in enumerate(argv) if not isinstance(arg, str)]
    if bad or not argv[0]:
        raise FediflowError("%s: every element must be a string and the first the program (element %s is not)"
                            % (option, bad[0] if bad else 0))


def check_environment(env):
    """Refuse environment names that cannot be set (values are not looked at: they may be secrets)."""
    for name in env or {}:
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise FediflowError("environment: a variable name must be a non-empty string without '=' (got %r)" % (name,))


def program_found(program, env=None):
    """Whether ``program`` (a path, or a name looked up in the PATH the program will get) can be run."""
    if os.sep in program:
        return os.path.isfile(program) and os.access(program, os.X_OK)
    path = (env or {}).get("PATH") or os.environ.get("PATH", os.defpath)
    return shutil.which(program, path=path) is not None


def describe(argv, secrets=()):
    """An argument list as one line for a person, every secret masked."""
    return " ".join(redact(argv, secrets))


def _outcome(res, secrets):
    """One program run as plain data: argv (masked), exit code, duration, the last lines of its output."""
    return {"argv": redact(res.argv, secrets), "rc": res.rc, "duration_s": res.duration_s,
            "stdout": mask(last_lines(res.stdout), secrets), "stderr": mask(last_lines(res.stderr), secrets)}


def command_fence(argv, verify_argv=None, timeout=120.0, verify_timeout=60.0, env=None, check_mode=False,
                  verify_interval=2.0):
    """Run the fence ``argv``, then poll ``verify_argv`` until it exits 0 (at most ``verify_timeout`` s).

    Returns the module result (``fenced``, ``proved``, ``actions``, ``fence``, ``verify``); raises
    FediflowError (the partial result in ``details['result']``) when the fence is not proven. The fence
    always runs, even when the host may already be fenced: a verify program that passes before the
    fence (one that only sees that the host does not answer, say) must never skip it, so the fence
    program must be idempotent (fence agents' ``off`` is). Check mode runs nothing: it checks that the
    programs exist and says what would run.
    """
    timer = Timer()
    check_argv(argv, "argv")
    check_argv(verify_argv, "verify_argv", required=False)
    verify_argv = list(verify_argv or [])
    env = {k: str(v) for k, v in (env or {}).items() if v is not None}
    check_environment(env)
    for value, option in ((timeout, "timeout"), (verify_timeout, "verify_timeout")):
        if value is None or value <= 0:
            raise FediflowError("%s must be greater than 0 (seconds), got %s" % (option, value))
    secrets = [v for v in env.values() if v]
    shown, shown_verify = describe(argv, secrets), describe(verify_argv, secrets)
    result = {"changed": False, "fenced": False, "proved": "", "actions": [], "fence": None, "verify": None}

    def failure(why):
        result["duration_s"] = timer.elapsed()
        return FediflowError("%s; %s" % (why, NEXT), result=result)

    if check_mode:
        missing = [a[0] for a in (argv, verify_argv) if a and not program_found(a[0], env)]
        if missing:
            raise failure("fence program not found on this host: %s" % ", ".join(missing))
        result["changed"] = True
        result["actions"] = ["would run the fence command: %s (at most %ss)" % (shown, timeout)]
        if verify_argv:
            result["actions"].append("would run the verify command until it exits 0 (at most %ss): %s"
                                     % (verify_timeout, shown_verify))
        result["duration_s"] = timer.elapsed()
        return result

    result["changed"] = True  # a fence that ran may have acted, whatever its end
    with timer.phase("fence"):
        try:
            res = run(argv, env=env, timeout=timeout, kill_group=True)
        except FediflowError as exc:
            why = mask(exc.message, secrets)
            result["changed"] = not why.startswith("program not found")
            result["actions"].append("fence command %s: %s" % (shown, why))
            raise failure("fence command failed: %s" % why)
    result["fence"] = _outcome(res, secrets)
    result["actions"].append("ran the fence command: %s (exit %s, %.1f s)" % (shown, res.rc, res.duration_s))
    if res.rc != 0:
        output = result["fence"]["stderr"] or result["fence"]["stdout"] or "no output"
        raise failure("fence command %s exited %s: %s" % (argv[0], res.rc, output))
    if not verify_argv:
        result["fenced"] = True
        result["proved"] = "fence command exited 0 (no verify command: its exit status is the only proof)"
        result["duration_s"] = timer.elapsed()
        return result

    attempts = []
    deadline = timer.elapsed() + verify_timeout

    def verified():
        left = max(deadline - timer.elapsed(), 1.0)
        try:
            got = run(verify_argv, env=env, timeout=left, kill_group=True)
        except FediflowError as exc:
            attempts.append({"argv": redact(verify_argv, secrets), "rc": None, "error": mask(exc.message, secrets)})
            return exc.message.startswith("program not found") and "missing"
        attempts.append(_outcome(got, secrets))
        return got.rc == 0

    with timer.phase("verify"):
        outcome, waited = wait_until(verified, verify_timeout, interval=0.5, max_interval=verify_interval)
    last = attempts[-1]
    result["verify"] = dict(last, attempts=len(attempts), waited_s=waited)
    if outcome is True:
        result["fenced"] = True
        result["proved"] = "verify command exited 0 (attempt %d, %.1f s after the fence)" % (len(attempts), waited)
        result["actions"].append("ran the verify command: %s (exit 0 at attempt %d)" % (shown_verify, len(attempts)))
        result["duration_s"] = timer.elapsed()
        return result
    why = last.get("error") or "exit %s: %s" % (last["rc"], last["stderr"] or last["stdout"] or "no output")
    result["actions"].append("ran the verify command: %s (%d attempts, never exit 0)" % (shown_verify, len(attempts)))
    raise failure("verify command %s did not exit 0 within %ss (%d attempts; last %s)" % (
        verify_argv[0], verify_timeout, len(attempts), why))
