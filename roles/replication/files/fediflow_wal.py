# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL archive_command / restore_command of fediflow.dr.

Installed by the replication role beside ``walarchive.py`` (the logic, from the
collection's module_utils) and run by PostgreSQL as its OS user with the system Python:

    archive_command = 'python3 /path/fediflow_wal.py --repo DIR push %p %f'
    restore_command = 'python3 /path/fediflow_wal.py --repo DIR fetch %f %p'
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
