# -*- coding: utf-8 -*-
# Copyright: (c) 2026, FediFlow SRE <sre@fediflow.example>
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Step timing, one home: the marks a role sets as it goes become timed steps, and a step's end is read back."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def _at(mark, where):
    if not isinstance(mark, Mapping) or not mark.get("step"):
        raise AnsibleFilterError("%s: each mark needs a step name and an 'at' time, got %r" % (where, mark))
    try:
        return float(mark["at"])
    except (KeyError, TypeError, ValueError):
        raise AnsibleFilterError("%s: mark %s has no numeric 'at' time" % (where, mark.get("step")))


def step_durations(marks, end):
    """``marks``: ``[{step, at}]`` in the order the role reached them (epoch seconds); ``end``: when the run ended.
    Each step runs from its mark to the next (the last to ``end``): ``[{step, start, end, duration_s}]``. A
    ``done`` mark closes the work: the time after it (the result's own bookkeeping) is not a step."""
    if not isinstance(marks, (list, tuple)):
        raise AnsibleFilterError("step_durations: expects a list of marks")
    times = [_at(m, "step_durations") for m in marks] + [float(end)]
    out = []
    for index, mark in enumerate(marks):
        if mark["step"] == "done":
            continue
        start, stop = times[index], times[index + 1]
        if stop < start:
            raise AnsibleFilterError("step_durations: step %s ends before it starts" % mark["step"])
        out.append({"step": mark["step"], "start": start, "end": stop, "duration_s": round(stop - start, 3)})
    return out


def step_end(steps, name):
    """When the step ``name`` of timed ``steps`` (step_durations) ended; an error names a missing step."""
    for step in steps or []:
        if isinstance(step, Mapping) and step.get("step") == name:
            return float(step["end"])
    raise AnsibleFilterError("step_end: no step %r among %s" % (
        name, [s.get("step") for s in steps or [] if isinstance(s, Mapping)]))


class FilterModule:
    """fediflow.dr filters."""

    def filters(self):
        return {"step_durations": step_durations, "step_end": step_end}
