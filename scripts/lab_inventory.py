#!/usr/bin/env python
"""Write a copy of the lab inventory that runs a second, independent lab beside the first.

Every loopback port of the lab (PostgreSQL, moto, Kubernetes doubles, Slack receiver,
federation peers; the 15000-15999 range in inventories/lab) is shifted by --offset and the
lab's state directory becomes --lab-dir, so two labs never share a port, a process or a file.
Used by developers working in parallel (and by anyone who wants a scratch lab):

    python scripts/lab_inventory.py --offset 1000 --lab-dir /var/tmp/fediflow-lab-b --out /tmp/inv-b
    FEDIFLOW_LAB_INVENTORY=/tmp/inv-b/hosts.yml make test-integration
    make drill INVENTORY=/tmp/inv-b/hosts.yml
"""
import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "inventories" / "lab"
PORT = re.compile(r"(?<![\d.])(15\d{3})(?!\d)")
LAB_DIR = re.compile(r"^(fediflow_lab_dir:\s*).*$", re.M)


def shift(text, offset):
    return PORT.sub(lambda m: str(int(m.group(1)) + offset), text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offset", type=int, required=True, help="added to every lab port (e.g. 1000)")
    parser.add_argument("--lab-dir", required=True, help="the second lab's state directory (postgres must traverse it)")
    parser.add_argument("--out", required=True, help="directory to write the inventory into (replaced)")
    args = parser.parse_args(argv)
    if args.offset == 0 or not (0 < 15000 + args.offset and 15999 + args.offset < 65536):
        parser.error("--offset must move every port (15000-15999) inside 1-65535 and not be 0")
    if not args.lab_dir.startswith("/") or args.lab_dir.startswith("/root"):
        parser.error("--lab-dir must be absolute and outside /root (the postgres user must reach it)")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    for src in sorted(SOURCE.rglob("*")):
        dst = out / src.relative_to(SOURCE)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = shift(src.read_text(encoding="utf-8"), args.offset)
        if src.name == "main.yml" and src.parent.name == "all":
            text, count = LAB_DIR.subn(lambda m: m.group(1) + args.lab_dir, text)
            if count != 1:
                sys.exit("fediflow_lab_dir not found once in %s" % src)
        dst.write_text(text, encoding="utf-8")
    print(out / "hosts.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
