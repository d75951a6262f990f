# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller half of fediflow.dr.dr_report: the HTML and Markdown templates are files on the
controller (the collection's own in plugins/templates/, or an operator's, found like
ansible.builtin.template's src), and the module runs on whichever host writes the report. This reads
each template and hands its text to the module in the same option; the result names the files read,
and the task's invocation shows their paths, not their text."""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.fediflow.dr.plugins.module_utils.report import TEMPLATE_OPTIONS, shipped_template

MODULE = "fediflow.dr.dr_report"


class ActionModule(ActionBase):

    TRANSFERS_FILES = False  # the templates travel as text in the module's arguments

    def _read_template(self, fmt, given):
        """``(path, text)`` of the template of ``fmt``: ``given`` searched like a template's src (the role's
        templates/, the playbook's templates/ and directory, or absolute), else the collection's own."""
        path = self._find_needle("templates", given) if given else shipped_template(fmt)
        with open(path, "rb") as handle:
            return path, to_text(handle.read(), errors="surrogate_or_strict")

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # unused since ansible-core 2.x
        args = dict(self._task.args)
        paths = {}
        for fmt, option in TEMPLATE_OPTIONS.items():
            given = args.get(option)
            try:
                paths[fmt], args[option] = self._read_template(fmt, given)
            except (AnsibleError, OSError, UnicodeError) as exc:
                where = " ".join(str(exc).split())
                result.update(failed=True, changed=False, duration_s=0.0,
                              msg="%s: cannot read the template %s on the controller: %s" % (
                                  option, given or shipped_template(fmt), where))
                return result
        result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
        invocation = (result.get("invocation") or {}).get("module_args")
        if isinstance(invocation, dict):
            for fmt, option in TEMPLATE_OPTIONS.items():
                invocation[option] = paths[fmt]
        result["templates"] = paths
        return result
