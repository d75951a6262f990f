# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL archive_command / restore_command of fediflow.dr.

Installed by the replication role beside ``walarchive.py`` (the logic, from the
collection's module_utils) and run by PostgreSQL as its OS user with the system Python:

    archive_command = 'python3 /path/fediflow_wal.py --config FILE push %p %f'
    restore_command = 'python3 /path/fediflow_wal.py --config FILE fetch %f %p'
    python3 /path/fediflow_wal.py --config FILE status      # JSON: newest segment, its age

FILE is JSON, mode 0600, owned by the PostgreSQL OS user (credentials never go in argv:
archive_command is visible in pg_settings and ps), for S3:

    {"backend": "s3", "bucket": "...", "prefix": "wal/us-east-1", "region": "us-east-1",
     "endpoint_url": null, "access_key": "...", "secret_key": "...", "session_token": null,
     "sse": "AES256", "kms_key_id": null, "storage_class": null}

(without access_key/secret_key: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN,
then the EC2 instance role through IMDSv2), or ``{"backend": "dir", "repo": "/path"}``;
``--repo DIR`` is a shorthand for the latter. Exit status 0 on success, 1 on any failure
with a one-line message on stderr, except ``fetch``: 1 only when no repository has the file,
255 for a hard error (repository failure, checksum mismatch, permission denied), so that
PostgreSQL aborts an archive recovery rather than ending it there (in standby mode: 1, a
standby retries; see walarchive.fetch_exit_code).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import walarchive  # noqa: E402  pylint: disable=wrong-import-position


def run():
    code, out, err = walarchive.main(sys.argv[1:])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(run())
