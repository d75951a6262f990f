# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # The escalation matrix of the modules that escalate by the outage's age (incident_notify, incident);
    # its argument spec is module_utils/notify.py matrix_argument_spec().
    DOCUMENTATION = r"""
options:
  escalation_matrix:
    description:
      - The escalation levels, sorted by O(escalation_matrix[].after_s) ascending, the first at 0.
      - The default is the runbook's matrix, without recipients.
    type: list
    elements: dict
    default:
      - {after_s: 0, level: on-call}
      - {after_s: 1800, level: technical lead}
      - {after_s: 3600, level: engineering manager}
      - {after_s: 7200, level: executive team}
    suboptions:
      after_s:
        description: Outage age in seconds from which this level applies.
        type: int
        required: true
      level:
        description: Name of the level, for example C(technical lead).
        type: str
        required: true
      recipients:
        description: Email addresses this level adds once it is reached (with O(ses_sender)).
        type: list
        elements: str
"""
