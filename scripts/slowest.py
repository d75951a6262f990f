"""Print the slowest tests of `make test` from the JUnit files the tiers wrote (tests/output/junit).

Usage: python scripts/slowest.py [N] [JUNIT_DIR]
"""
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def cases(junit_dir):
    for path in sorted(Path(junit_dir).glob("*.xml")):
        for case in ET.parse(path).getroot().iter("testcase"):
            name = "%s::%s" % (case.get("classname", ""), case.get("name", ""))
            yield path.stem, name, float(case.get("time") or 0)


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 10
    junit_dir = argv[2] if len(argv) > 2 else Path(__file__).resolve().parents[1] / "tests" / "output" / "junit"
    rows = sorted(cases(junit_dir), key=lambda row: -row[2])[:count]
    if not rows:
        print("no JUnit results under %s" % junit_dir)
        return 0
    print("\n%d slowest tests" % len(rows))
    for tier, name, took in rows:
        print("%8.1f s  %-12s %s" % (took, tier, name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
