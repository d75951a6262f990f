from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.fediflow.dr.plugins.filter.steps import FilterModule, step_durations, step_end

MARKS = [{"step": "inspect", "at": 100.0}, {"step": "fence", "at": "101.5"}, {"step": "promote", "at": 104.25},
         {"step": "done", "at": 110.0}]


def test_each_step_runs_to_the_next_mark_and_done_closes_the_work():
    steps = step_durations(MARKS, 111.0)
    assert [s["step"] for s in steps] == ["inspect", "fence", "promote"]
    assert [s["duration_s"] for s in steps] == [1.5, 2.75, 5.75]
    assert steps[0]["start"] == 100.0 and steps[-1]["end"] == 110.0
    assert step_end(steps, "fence") == 104.25


def test_a_failed_run_without_done_ends_its_last_step_at_the_end():
    steps = step_durations(MARKS[:2], 103.0)
    assert steps[-1] == {"step": "fence", "start": 101.5, "end": 103.0, "duration_s": 1.5}


@pytest.mark.parametrize("marks, end, word", [
    ([{"step": "a", "at": 5}, {"step": "b", "at": 4}], 6, "ends before it starts"),
    ([{"step": "a"}], 6, "no numeric"),
    ([{"at": 1}], 6, "needs a step name"),
    ("not a list", 6, "expects a list"),
])
def test_bad_marks_are_refused(marks, end, word):
    with pytest.raises(AnsibleFilterError, match=word):
        step_durations(marks, end)


def test_a_missing_step_is_named():
    with pytest.raises(AnsibleFilterError, match="no step 'kubernetes' among \\['inspect'"):
        step_end(step_durations(MARKS, 111.0), "kubernetes")


def test_registered():
    assert set(FilterModule().filters()) == {"step_durations", "step_end"}
