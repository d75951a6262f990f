# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    # Backup repositories: the backup written to each (one per region), checked there.
    DOCUMENTATION = r"""
options:
  repositories:
    description:
      - The repositories every backup is written to, in order (the host's own region first), for example one S3
        bucket per region, so that losing a region loses one copy and not the backups.
      - Writing, each gets the backup's files, each checked where it landed (size and SHA-256), then - once every
        repository has had its try - the manifest, which records where the copies are (C(copies)). A repository
        that does not answer (two quick attempts) is reported down and gets no copy; a bucket that does not exist
        is refused before anything is touched.
      - Reading (verify, restore, retention) uses every repository that answers, a backup read from the first that
        holds it (a lost region's is skipped); retention runs per repository, so a copy that failed never costs
        another repository its last good backup.
      - The AWS options (O(access_key), O(secret_key), ...) apply to every repository; O(region) and
        O(endpoint_url) are defaults for repositories that name none.
      - Mutually exclusive with O(s3_bucket), the one-repository shorthand (a repository named V(s3)).
    type: list
    elements: dict
    suboptions:
      name:
        description: A name for the repository (letters, digits, C(.), C(_), C(-)), for example its region.
        type: str
        required: true
      bucket:
        description: The S3 bucket.
        type: str
        required: true
      prefix:
        description: Key prefix in O(repositories[].bucket); the module's O(s3_prefix) is appended to it.
        type: str
        default: ''
      region:
        description: The bucket's AWS region (the API region), else O(region).
        type: str
      endpoint_url:
        description: The S3 endpoint of this bucket (for example the region's own), else O(endpoint_url).
        type: str
"""

    # Modules that write backups: how many copies make one complete.
    COPIES = r"""
options:
  required_copies:
    description:
      - How many repositories must hold the backup (files and manifest) for the run to succeed; V(0) means every
        one of O(repositories).
      - A backup with fewer copies fails the run (the copies made stay, complete and listed); with as many as
        required but not every repository, it succeeds as C(degraded) with a warning. Lower it to accept one copy
        while a region is lost.
    type: int
    default: 0
"""
