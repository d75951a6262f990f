# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way every fediflow.dr module ends: call the logic, exit with its plain-dict result,
or fail with a one-line message (plus the traceback and any partial result). The logic runs with a
private umask (common.private_umask): whatever it creates is 0600 / 0700 from the start."""

from __future__ import annotations

import traceback

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, private_umask


def run_module(module, func, *args, **kwargs):
    """``func`` returns the result dict (with ``diff`` for --diff); FediflowError fails."""
    try:
        with private_umask():
            result = func(*args, **kwargs)
    except FediflowError as exc:
        partial = dict(exc.details.get("result") or {})
        changed = bool(partial.pop("changed", False))
        partial.pop("diff", None)
        partial.pop("msg", None)  # the failure's own message is the one said (a result may carry a msg too)
        partial.setdefault("duration_s", 0.0)
        module.fail_json(msg=exc.message, exception=traceback.format_exc(), changed=changed, **partial)
    except Exception as exc:  # pylint: disable=broad-except
        # last resort: one line a person can read, the traceback beside it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        module.fail_json(msg="%s: %s" % (type(exc).__name__, first), exception=traceback.format_exc(),
                         duration_s=0.0)
    if not module._diff:  # pylint: disable=protected-access
        result.pop("diff", None)
    module.exit_json(**result)
