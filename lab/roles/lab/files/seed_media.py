"""Seed the lab's media tree: deterministic files of varied sizes, ~20 % duplicate contents
(as user uploads are), in nested directories. Standard library only.

usage: seed_media.py DIR COUNT
Writes DIR/.seeded last; does nothing when it exists (idempotent)."""
import hashlib
import os
import sys


def content(index):
    # every fifth file repeats an earlier file's bytes
    source = index - (index % 5) if index % 5 == 4 else index
    size = 512 + (source * 7919) % 24576
    block = hashlib.sha256(b"fediflow-media-%d" % source).digest()
    return (block * (size // len(block) + 1))[:size]


def main(root, count):
    marker = os.path.join(root, ".seeded")
    if os.path.exists(marker):
        return 0
    for index in range(count):
        sub = os.path.join(root, "%02x" % (index % 64), "%02x" % ((index // 64) % 16))
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, "%06d.jpg" % index), "wb") as handle:
            handle.write(content(index))
    with open(marker, "w", encoding="ascii") as handle:
        handle.write("%d\n" % count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
