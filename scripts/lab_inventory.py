"""Write a copy of the lab inventory that runs a second, independent lab beside the first.

Every loopback port of the lab (PostgreSQL, moto, Kubernetes doubles, Slack receiver,
federation peers; the 15000-15999 range in inventories/lab) is shifted by --offset, the
lab's state directory becomes --lab-dir, and the lab index becomes --lab-index (default
offset / 1000): its subnet 198.18.0.0/24 moves to 198.18.<index>.0/24, the names of its
namespaces, bridge, links and Debian clusters follow the index, and its SSH user gets the index as a suffix.
So two labs never share a port, a process, a file, an address, a namespace or a user.
Used by developers working in parallel (and by anyone who wants a scratch lab):

    python scripts/lab_inventory.py --offset 1000 --lab-dir /var/tmp/fediflow-lab-b --out /tmp/inv-b
    FEDIFLOW_LAB_INVENTORY=/tmp/inv-b/hosts.yml make test-integration
    make drill INVENTORY=/tmp/inv-b/hosts.yml
"""
import argparse
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "inventories" / "lab"
PORT = re.compile(r"(?<![\d.])(15\d{3})(?!\d)")
LAB_DIR = re.compile(r"^(fediflow_lab_dir:\s*).*$", re.M)
# the lab subnet (198.18.0.0/24 in inventories/lab) and the settings named after the lab index
ADDRESS = re.compile(r"(?<![\d.])198\.18\.0\.(\d{1,3})(?![\d])")
LAB_INDEX = re.compile(r"^(lab_net_index:\s*)0\s*$", re.M)
SSH_USER = re.compile(r"^(lab_ssh_user:\s*)(\w+)\s*$", re.M)
# the Debian packaged cluster of a region (fediflow_pg_cluster, its /etc/postgresql directory) is named after the index
CLUSTER = re.compile(r"(?<=/)fdl0_(?=\w)")


def shift(text, offset, lab_index=None):
    text = PORT.sub(lambda m: str(int(m.group(1)) + offset), text)
    if lab_index is not None:
        text = ADDRESS.sub(lambda m: "198.18.%d.%s" % (lab_index, m.group(1)), text)
        text = CLUSTER.sub("fdl%d_" % lab_index, text)
    return text


def _replace_once(pattern, repl, text, what, src):
    text, count = pattern.subn(repl, text)
    if count != 1:
        sys.exit("%s not found once in %s" % (what, src))
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offset", type=int, required=True, help="added to every lab port (e.g. 1000)")
    parser.add_argument("--lab-dir", required=True, help="the second lab's state directory (postgres must traverse it)")
    parser.add_argument("--out", required=True, help="directory to write the inventory into (replaced)")
    parser.add_argument("--lab-index", type=int,
                        help="the second lab's index, 1-255: its subnet 198.18.<index>.0/24 and names (default offset / 1000)")
    args = parser.parse_args(argv)
    if args.lab_index is None:
        args.lab_index = args.offset // 1000
    if not 1 <= args.lab_index <= 255:
        parser.error("--lab-index must be 1-255 (0 is the embedded lab's); give it when --offset / 1000 is not")
    if args.offset == 0 or not (0 < 15000 + args.offset and 15999 + args.offset < 65536):
        parser.error("--offset must move every port (15000-15999) inside 1-65535 and not be 0")
    if not args.lab_dir.startswith("/") or args.lab_dir.startswith("/root"):
        parser.error("--lab-dir must be absolute and outside /root (the postgres user must reach it)")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    # the inventory holds the lab's passwords: private (0700 directories, 0600 files) from the start
    os.umask(0o077)
    for src in sorted(SOURCE.rglob("*")):
        dst = out / src.relative_to(SOURCE)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = shift(src.read_text(encoding="utf-8"), args.offset, args.lab_index)
        if src.name == "main.yml" and src.parent.name == "all":
            text = _replace_once(LAB_DIR, lambda m: m.group(1) + args.lab_dir, text, "fediflow_lab_dir", src)
        if src.name == "lab.yml" and src.parent.name == "all":
            text = _replace_once(LAB_INDEX, lambda m: "%s%d\n" % (m.group(1), args.lab_index), text, "lab_net_index: 0", src)
            text = _replace_once(SSH_USER, lambda m: "%s%s%d\n" % (m.group(1), m.group(2), args.lab_index), text,
                                 "lab_ssh_user", src)
        dst.write_text(text, encoding="utf-8")
    print(out / "hosts.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
