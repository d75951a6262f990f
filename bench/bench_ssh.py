"""What SSH costs a database host's task: the same module run on region 1's host over SSH (what the lab
inventory says: an sshd in the region's namespace, become, the host's /usr/bin/python3, Ansible's
ControlPersist) against the local connection with the controller's Python (what the lab used before its
regions became hosts), in the same run.

The module is fediflow.dr.pg_ctl state=started on the running primary: a read-only status check, the
kind of task the failover, failback and drill run on a database host. Each playbook runs TASKS copies;
the per-task figure is (wall of TASKS tasks - wall of 1 task) / (TASKS - 1), so Ansible's start-up and
the first (cold) SSH connection are not in it; the cold connection is shown on its own row.
With --drill-log LOG (the output of `make drill` or ansible-playbook playbooks/dr_drill.yml) it also
counts the task results on the region hosts and prints what SSH added to that drill.

Usage: python bench/bench_ssh.py [--tasks 20] [--rounds 3] [--drill-log FILE]   (the lab must be up)
"""
import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BIN, INVENTORY, ROOT, ansible_env, lab_hostvars

LOCAL = ["-e", "ansible_connection=local", "-e", "ansible_python_interpreter=%s" % sys.executable,
         "-e", "ansible_become=false"]


def _playbook(path, tasks, data_dir):
    lines = ["---", "- hosts: region_primary", "  gather_facts: false", "  tasks:"]
    for n in range(tasks):
        lines += ["    - name: status %d" % n, "      fediflow.dr.pg_ctl:",
                  "        data_dir: %s" % data_dir, "        state: started", "        os_user: postgres"]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _wall(path, extra, control_dir):
    env = ansible_env()
    env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = control_dir  # the bench's own SSH masters, no one else's
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(INVENTORY), str(path), *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if proc.returncode:
        sys.exit("bench playbook failed:\n%s" % proc.stdout[-3000:])
    return took


def _close_masters(control_dir, address):
    """End the bench's own ControlPersist masters (the next task opens a cold connection)."""
    for sock in Path(control_dir).iterdir():
        subprocess.run(["ssh", "-o", "ControlPath=%s" % sock, "-O", "exit", address], capture_output=True, check=False)


def _drill_region_tasks(log):
    """Task results on the region hosts in a drill's recap: ok + failed per host (changed ones are in ok;
    skipped ones never connect)."""
    total = 0
    for line in Path(log).read_text(encoding="utf-8").splitlines():
        match = re.match(r"^(\S+)\s+: ok=(\d+)\s+changed=\d+\s+unreachable=\d+\s+failed=(\d+)\s+skipped=(\d+)", line)
        if match and match.group(1) != "localhost":
            total += int(match.group(2)) + int(match.group(3))
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drill-log")
    args = parser.parse_args()
    if args.tasks < 2 or args.rounds < 1:
        parser.error("--tasks must be at least 2 and --rounds at least 1")
    primary, _standby = lab_hostvars()
    with tempfile.TemporaryDirectory() as work:
        control_dir = str(Path(work) / "cp")
        Path(control_dir).mkdir(mode=0o700)
        one, many = Path(work) / "one.yml", Path(work) / "many.yml"
        _playbook(one, 1, primary["fediflow_pg_data_dir"])
        _playbook(many, args.tasks, primary["fediflow_pg_data_dir"])
        rows = {}
        for name, extra in (("ssh (the inventory)", []), ("local (controller's Python)", LOCAL)):
            _wall(one, extra, control_dir)  # warm: caches, the SSH master
            per_task, firsts = [], []
            for _round in range(args.rounds):
                if not extra:
                    _close_masters(control_dir, primary["lab_net_address"])
                    firsts.append(_wall(one, extra, control_dir))
                base = _wall(one, extra, control_dir)
                per_task.append((_wall(many, extra, control_dir) - base) / (args.tasks - 1))
            rows[name] = (statistics.median(per_task), statistics.median(firsts) if firsts else None, base)
        _close_masters(control_dir, primary["lab_net_address"])
    ssh, local = rows["ssh (the inventory)"][0], rows["local (controller's Python)"][0]
    print("| connection | per task (s, median of %d) | 1-task playbook, cold SSH (s) | 1-task playbook, warm (s) |"
          % args.rounds)
    print("|---|---|---|---|")
    for name, (per, cold, warm) in rows.items():
        print("| %s | %.3f | %s | %.2f |" % (name, per, "%.2f" % cold if cold else "-", warm))
    print("\nSSH adds %.3f s per database-host task (%.2fx local)." % (ssh - local, ssh / local if local else 0))
    if args.drill_log:
        count = _drill_region_tasks(args.drill_log)
        print("The drill in %s has %d task results on the region hosts (an upper bound of the tasks that went over\n"
              "SSH: delegated and set_fact tasks count too): SSH added at most about %+.0f s to it."
              % (args.drill_log, count, count * max(ssh - local, 0.0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
