# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time restore, the pure part (used by ``pitr_restore``): plain data in, plain data out.

* the target: exactly one of time (ISO 8601 *with* a zone), lsn, xid, name (restore point) or
  latest, plus inclusive and action (promote | pause);
* the WAL archive as data: segment names, timeline history files, which timeline a target is on,
  and refusing a target whose timeline is ambiguous;
* the base backup: the newest *verified* physical backup of the ledger that ends before the
  target and lies on the target's timeline lineage; bounds (before the oldest verified backup's
  end, after the newest archived WAL) and gaps in the archive refused, naming the backup/segment;
* the recovery settings (PostgreSQL 12+: ``recovery.signal`` + ``recovery_target_*`` +
  ``restore_command`` = the collection's ``fediflow_wal.py fetch``), rendered for
  ``postgresql.auto.conf``.

Nothing here touches a server or a file; ``pitr_run`` does, after this has said yes.
"""

from __future__ import annotations

import datetime
import re
import shlex

from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError

TARGET_KINDS = ("time", "lsn", "xid", "name", "latest")
ACTIONS = ("promote", "pause")
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENT_NAME_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY_NAME_RE = re.compile(r"^([0-9A-F]{8})\.history$")
LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
# ISO 8601 date and time with a zone: Z, +HH, +HH:MM or +HHMM (a bare local time is refused)
TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?"
                     r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)$")
FIRST_NORMAL_XID = 3
MAX_RESTORE_POINT_NAME = 63  # MAXFNAMELEN - 1
ARCHIVE_TIME_RESOLUTION_S = 1.0


# --------------------------------------------------------------------------- LSNs and segments

def parse_lsn(text, option="target_lsn"):
    match = LSN_RE.match(str(text or "").strip())
    if not match:
        raise FediflowError("%s must be an LSN like 0/3000148 (two hexadecimal numbers), got '%s'" % (option, text))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value):
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def _per_xlogid(segment_size):
    return 0x100000000 // segment_size


def segment_name(tli, lsn, segment_size=DEFAULT_SEGMENT_SIZE):
    segno = lsn // segment_size
    per = _per_xlogid(segment_size)
    return "%08X%08X%08X" % (tli, segno // per, segno % per)


def parse_segment(name, segment_size=DEFAULT_SEGMENT_SIZE):
    """``(timeline, segment number)`` of a WAL segment file name, or None."""
    match = SEGMENT_NAME_RE.match(name or "")
    if not match:
        return None
    return int(match.group(1), 16), int(match.group(2), 16) * _per_xlogid(segment_size) + int(match.group(3), 16)


def segment_end_lsn(segno, segment_size=DEFAULT_SEGMENT_SIZE):
    return (segno + 1) * segment_size


# --------------------------------------------------------------------------- the target

def parse_time(text, option="target_time"):
    """An aware UTC datetime from ISO 8601 with a zone; a bare local time or an impossible date
    (2026-13-01) is refused."""
    raw = str(text or "").strip()
    match = TIME_RE.match(raw)
    if not match:
        if re.match(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$", raw):
            raise FediflowError("%s '%s' has no time zone: give one (e.g. %sZ or +02:00); a bare local "
                                "time means different instants on different hosts" % (option, raw, raw if "T" in raw or " " in raw else raw + "T00:00:00"))
        raise FediflowError("%s must be an ISO 8601 date and time with a zone, like 2026-11-25T14:03:00Z, got '%s'"
                            % (option, raw))
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    micro = int((match.group(7) or "0").ljust(6, "0"))
    zone = match.group(8)
    if zone in ("Z", "z"):
        offset = datetime.timedelta(0)
    else:
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            raise FediflowError("%s '%s': time zone offset %s is not valid" % (option, raw, zone))
        offset = datetime.timedelta(hours=hours, minutes=minutes) * (-1 if zone[0] == "-" else 1)
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second, micro,
                                   tzinfo=datetime.timezone(offset))
    except ValueError as exc:
        raise FediflowError("%s '%s' is not a valid date and time: %s" % (option, raw, exc))
    return moment.astimezone(datetime.timezone.utc)


def pg_time(moment):
    """A UTC datetime as PostgreSQL reads recovery_target_time unambiguously."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def parse_target(params):
    """Validate the target options; returns ``{kind, value, setting, setting_value, inclusive,
    action}`` (value: datetime / int LSN / int xid / str name / True)."""
    given = [k for k in TARGET_KINDS if params.get("target_" + k) not in (None, "", False)]
    if not given:
        raise FediflowError("give exactly one target: target_time, target_lsn, target_xid, target_name or "
                            "target_latest=true")
    if len(given) > 1:
        raise FediflowError("give exactly one target, got %s" % " and ".join("target_" + k for k in given))
    kind = given[0]
    raw = params["target_" + kind]
    action = params.get("action") or "promote"
    if action not in ACTIONS:
        raise FediflowError("action must be promote or pause, got '%s'" % action)
    inclusive = params.get("inclusive")
    inclusive = True if inclusive is None else bool(inclusive)
    if kind == "time":
        value = parse_time(raw)
        setting_value = pg_time(value)
    elif kind == "lsn":
        value = parse_lsn(raw)
        setting_value = format_lsn(value)
    elif kind == "xid":
        text = str(raw).strip()
        if not text.isdigit() or int(text) < FIRST_NORMAL_XID:
            raise FediflowError("target_xid must be a transaction id (an integer >= %d), got '%s'" % (FIRST_NORMAL_XID, raw))
        value = int(text)
        if value >= 1 << 64:
            raise FediflowError("target_xid %s is out of range" % raw)
        setting_value = str(value)
    elif kind == "name":
        value = str(raw)
        if not value.strip() or len(value.encode("utf-8")) > MAX_RESTORE_POINT_NAME:
            raise FediflowError("target_name must be a restore point name of 1 to %d bytes, got '%s'"
                                % (MAX_RESTORE_POINT_NAME, raw))
        setting_value = value
    else:
        if raw is not True:
            raise FediflowError("target_latest must be true (or left out), got '%s'" % raw)
        value = True
        setting_value = None
        if action == "pause":
            raise FediflowError("action=pause needs a target: target_latest recovers to the end of the archive "
                                "and opens (use target_time/target_lsn to stop and inspect)")
    return {"kind": kind, "value": value, "setting": None if kind == "latest" else "recovery_target_" + kind,
            "setting_value": setting_value, "inclusive": inclusive, "action": action,
            "display": setting_value if kind != "latest" else "latest"}


def parse_timeline(value):
    """``auto`` (decided from the archive), ``latest`` or a positive timeline number."""
    if value in (None, "", "auto"):
        return "auto"
    if value == "latest":
        return "latest"
    text = str(value).strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise FediflowError("timeline must be auto, latest or a timeline number >= 1, got '%s'" % value)


# --------------------------------------------------------------------------- the archive as data

def parse_history(text):
    """A timeline history file: ``[(parent_tli, switchpoint_lsn)]`` in order."""
    entries = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            raise FediflowError("unreadable timeline history line: '%s'" % line)
        entries.append((int(parts[0]), parse_lsn(parts[1], "history switchpoint")))
    return entries


def archive_index(entries, histories, segment_size=DEFAULT_SEGMENT_SIZE):
    """The archive as data. ``entries``: ``[(file name, archived_at epoch)]``; ``histories``:
    ``{tli: history file text}``. Returns ``{segments: {tli: {segno: archived_at}}, lineage:
    {tli: [(tli, end_lsn or None)]}, timelines: [...]}``."""
    segments = {}
    for name, at in entries:
        parsed = parse_segment(name, segment_size)
        if parsed:
            segments.setdefault(parsed[0], {})[parsed[1]] = at
    timelines = set(segments) | set(histories)
    lineage = {}
    for tli in timelines:
        hist = parse_history(histories[tli]) if tli in histories else []
        lineage[tli] = list(hist) + [(tli, None)]
    return {"segments": segments, "lineage": lineage, "timelines": sorted(timelines),
            "segment_size": segment_size}


def tli_at(lineage, lsn):
    """The timeline of ``lineage`` holding ``lsn`` (a switchpoint belongs to the child)."""
    for tli, end in lineage:
        if end is None or lsn < end:
            return tli
    return lineage[-1][0]


def tlis_for_segno(lineage, segno, segment_size=DEFAULT_SEGMENT_SIZE):
    """Timelines recovery tries for segment ``segno``, newest first (as PostgreSQL's
    XLogFileReadAnyTLI: every timeline of the lineage that begins at or before the segment)."""
    found = []
    begin = 0
    for tli, end in lineage:
        if begin // segment_size <= segno:
            found.append(tli)
        begin = end if end is not None else begin
    return list(reversed(found))


def divergences(index):
    """Forks where both sides hold WAL: a parent timeline with whole segments archived after the
    segment where a child switched off it. ``[(parent, child, switch_lsn)]``."""
    found = []
    seg = index["segment_size"]
    for child, lineage in index["lineage"].items():
        if len(lineage) < 2:
            continue
        parent, switch = lineage[-2]
        switch_segno = switch // seg
        later = [s for s in index["segments"].get(parent, {}) if s > switch_segno]
        if later:
            found.append((parent, child, switch))
    return sorted(found)


# Clock skew allowed between the archive's clock (when a segment was archived) and the database's (commit times):
# a branch counts as stopped before a target time only when its last segment was archived this much earlier.
ARCHIVE_CLOCK_MARGIN_S = 60


def _settled(index, fork, lsn, when, latest):
    """Whether ``fork`` (parent, child, switchpoint) cannot hold the target on the parent's side: the target LSN
    lies before the switchpoint (the same on both branches), or the target time comes after the parent's branch
    had stopped - every one of its segments past the fork archived (ARCHIVE_CLOCK_MARGIN_S) before it - while the
    child is on the latest timeline's line (an abandoned tail of a restore in place, an old primary fenced at a
    failover: at that time only the child's branch was taking writes)."""
    parent, child, switch = fork
    if lsn is not None and lsn < switch:
        return True
    if when is None or child not in {t for t, _end in index["lineage"][latest]}:
        return False
    switch_segno = switch // index["segment_size"]
    tail = [at for segno, at in index["segments"].get(parent, {}).items() if segno > switch_segno]
    return bool(tail) and all(at is not None for at in tail) and max(tail) + ARCHIVE_CLOCK_MARGIN_S < when


def choose_timeline(index, target, requested="auto", hint_lsn=None, hint_time=None):
    """The timeline recovery follows (its number), or refuse an ambiguous target.

    ``auto``: the highest timeline, unless the archive forks with WAL on both sides of a
    switchpoint and the target may be on either; an LSN (or ``hint_lsn``) before a switchpoint is
    the same on every branch, and a target time (or ``hint_time``, a datetime) after the parent's branch
    stopped is on the child's (``_settled``)."""
    if not index["timelines"]:
        raise FediflowError("the WAL archive holds no segments: nothing to recover from")
    latest = max(index["timelines"])
    if isinstance(requested, int):
        if requested not in index["lineage"]:
            raise FediflowError("timeline %d is not in the WAL archive (timelines there: %s)"
                                % (requested, ", ".join(str(t) for t in index["timelines"])))
        return requested
    if requested == "latest":
        return latest
    forks = divergences(index)
    if not forks:
        return latest
    lsn = target["value"] if target["kind"] == "lsn" else hint_lsn
    moment = target["value"] if target["kind"] == "time" else hint_time  # a datetime (an xid's commit time)
    when = moment.timestamp() if moment is not None else None
    forks = [fork for fork in forks if not _settled(index, fork, lsn, when, latest)]
    if not forks:
        return latest
    desc = "; ".join("timeline %d continues after %s where timeline %d branched off" % (p, format_lsn(s), c)
                     for p, c, s in forks)
    raise FediflowError("timeline ambiguity: %s. The target %s %s may be on either branch: set timeline "
                        "to the one you mean (%s)" % (desc, target["kind"], target["display"],
                                                      ", ".join(str(t) for t in index["timelines"])))


# --------------------------------------------------------------------------- the base backup

def _parse_iso(text):
    if not text:
        return None
    return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def backup_facts(manifest):
    source = manifest.get("source") or {}
    stop_lsn = manifest.get("stop_lsn")
    start_lsn = manifest.get("start_lsn")
    return {"id": manifest.get("id"), "stop_time": _parse_iso(manifest.get("stop_time")),
            "start_lsn": parse_lsn(start_lsn, "start_lsn") if start_lsn else None,
            "stop_lsn": parse_lsn(stop_lsn, "stop_lsn") if stop_lsn else None,
            "timeline": int(source.get("timeline") or 1),
            "verified": bool((manifest.get("verification") or {}).get("ok")),
            "kind": manifest.get("kind"), "manifest": manifest}


def _describe(fact):
    return "%s (ended %s at %s, timeline %d)" % (
        fact["id"], fact["stop_time"].strftime("%Y-%m-%dT%H:%M:%SZ") if fact["stop_time"] else "?",
        format_lsn(fact["stop_lsn"]) if fact["stop_lsn"] is not None else "?", fact["timeline"])


def ends_before(fact, target, hint_time=None, hint_lsn=None):
    """Whether the backup is consistent before the target (None: cannot tell)."""
    kind = target["kind"]
    if kind == "latest":
        return True
    if kind == "time" or (hint_time is not None and kind in ("xid", "name")):
        moment = target["value"] if kind == "time" else hint_time
        return fact["stop_time"] is not None and fact["stop_time"] <= moment
    if kind == "lsn" or hint_lsn is not None:
        lsn = target["value"] if kind == "lsn" else hint_lsn
        return fact["stop_lsn"] is not None and fact["stop_lsn"] <= lsn
    return None


def choose_base(manifests, target, lineage, backup_id=None, hint_time=None, hint_lsn=None):
    """The newest verified physical backup that ends before the target and lies on ``lineage``.

    Refuses (naming the backup) a target before the oldest verified backup's end, an unverified
    or unknown ``backup_id``, and a ledger without a verified physical backup. An xid or restore
    point name without a known position gets the oldest usable backup (safe, replays more)."""
    physical = [backup_facts(m) for m in manifests if m.get("kind") == "physical"]
    if backup_id:
        chosen = [f for f in physical if f["id"] == backup_id]
        if not chosen:
            raise FediflowError("backup_id '%s' is not a physical backup in the ledger" % backup_id)
        if not chosen[0]["verified"]:
            raise FediflowError("backup_id '%s' is not verified (run pg_backup_verify on it first)" % backup_id)
    if not physical:
        raise FediflowError("the backup ledger holds no physical base backup: take one with pg_backup_verify mode=physical")
    verified = [f for f in physical if f["verified"] and f["stop_lsn"] is not None]
    if not verified:
        raise FediflowError("no verified physical base backup in the ledger (%d unverified or failed: %s)"
                            % (len(physical), ", ".join(f["id"] for f in physical[:5])))
    tlis = [t for t, _e in lineage]
    ends = dict(lineage)

    def on_lineage(fact):
        if fact["timeline"] not in tlis:
            return False
        end = ends[fact["timeline"]]
        return end is None or fact["stop_lsn"] <= end

    verified.sort(key=lambda f: (f["stop_lsn"], f["id"]))
    usable = [f for f in verified if on_lineage(f)]
    if not usable:
        raise FediflowError("no verified base backup lies on timeline %d's history (%s); verified backups: %s"
                            % (lineage[-1][0], " -> ".join(str(t) for t in tlis),
                               "; ".join(_describe(f) for f in verified[:5])))
    if backup_id:
        fact = [f for f in usable if f["id"] == backup_id]
        if not fact:
            raise FediflowError("backup_id '%s' is not on timeline %d's history" % (backup_id, lineage[-1][0]))
        if ends_before(fact[0], target, hint_time, hint_lsn) is False:
            raise FediflowError("target %s %s is before the end of backup_id %s"
                                % (target["kind"], target["display"], _describe(fact[0])))
        return fact[0], "backup_id given"
    verdicts = [(f, ends_before(f, target, hint_time, hint_lsn)) for f in usable]
    before = [f for f, ok in verdicts if ok]
    if before:
        return before[-1], "newest verified backup ending before the target"
    if all(ok is None for _f, ok in verdicts):
        return usable[0], "oldest verified backup (the position of %s %s is unknown)" % (target["kind"], target["display"])
    oldest = usable[0]
    raise FediflowError("target %s %s is before the end of the oldest verified base backup %s: no backup "
                        "can reach it" % (target["kind"], target["display"], _describe(oldest)))


# --------------------------------------------------------------------------- archive bounds

def check_archive(index, base, target, lineage, now_epoch=None, hint_lsn=None):
    """Refuse a target beyond the newest archived WAL, or a gap in the WAL the restore needs.
    Returns ``{first_segment, last_segment, segments_available, newest_archived_at}``."""
    seg = index["segment_size"]
    start = base["start_lsn"] if base["start_lsn"] is not None else base["stop_lsn"]
    first_segno = start // seg
    # the segments recovery reads, in order: each segno from the timeline that holds it on the lineage
    path = []
    segno = first_segno
    newest_segno = max([s for t, end in lineage for s in index["segments"].get(t, {})
                        if end is None or s <= end // seg] or [-1])
    while segno <= newest_segno:
        held = [t for t in tlis_for_segno(lineage, segno, seg) if segno in index["segments"].get(t, {})]
        if not held:
            break
        path.append((held[0], segno, index["segments"][held[0]][segno]))
        segno += 1
    if not path:
        raise FediflowError("WAL segment %s (the start of base backup %s) is not in the archive"
                            % (segment_name(tli_at(lineage, first_segno * seg), first_segno * seg, seg), base["id"]))
    last_tli, last_segno, last_at = path[-1]
    last_name = segment_name(last_tli, last_segno * seg, seg)
    newest = max(at for _t, _s, at in path)
    reached_end = segment_end_lsn(last_segno, seg)
    missing = segment_name(tli_at(lineage, (last_segno + 1) * seg), (last_segno + 1) * seg, seg)
    gap = last_segno < newest_segno
    kind = target["kind"]
    if base["stop_lsn"] is not None and base["stop_lsn"] > reached_end:
        raise FediflowError("WAL segment %s is missing from the archive: base backup %s needs WAL up to %s"
                            % (missing, base["id"], format_lsn(base["stop_lsn"])))
    lsn = target["value"] if kind == "lsn" else hint_lsn
    if lsn is not None and lsn >= reached_end:  # a record must start at or after it in archived WAL
        if gap:
            raise FediflowError("WAL segment %s is missing from the archive (a gap): recovery cannot reach %s %s"
                                % (missing, kind, target["display"]))
        raise FediflowError("target %s %s is after the newest archived WAL (segment %s ends at %s): that WAL is "
                            "not archived (yet)" % (kind, target["display"], last_name, format_lsn(reached_end)))
    if kind == "time":
        newest_at = datetime.datetime.fromtimestamp(newest, datetime.timezone.utc)
        # S3's LastModified has one-second resolution: only a target beyond it is surely unarchived
        if target["value"] >= newest_at + datetime.timedelta(seconds=ARCHIVE_TIME_RESOLUTION_S):
            what = "a gap in the archive at segment %s" % missing if gap else "not archived (yet)"
            raise FediflowError("target time %s is after the newest archived WAL (segment %s, archived %s): "
                                "WAL after that is %s" % (target["display"], last_name,
                                                          newest_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), what))
    return {"first_segment": segment_name(path[0][0], path[0][1] * seg, seg), "last_segment": last_name,
            "segments_available": len(path), "newest_archived_at": newest,
            "end_lsn": format_lsn(reached_end), "gap_at": missing if gap else None}


def unarchived_wal(files, tli, archive_end_lsn, segment_size=DEFAULT_SEGMENT_SIZE):
    """The old cluster's WAL files a ``latest`` restore must replay beyond the archive: ``files`` are
    ``(name, page address of its first page)`` from its pg_wal; kept: the segments of timeline ``tli`` from the
    first one the archive lacks on, whose first page was written for that very position (a recycled segment
    renamed ahead holds old WAL whose page address is another: skipped), contiguous from there. Sorted names."""
    wanted = {}
    for name, pageaddr in files:
        parsed = parse_segment(name, segment_size)
        if parsed is not None and parsed[0] == tli and pageaddr == parsed[1] * segment_size:
            wanted[parsed[1]] = name
    out = []
    segno = archive_end_lsn // segment_size
    while segno in wanted:  # a hole ends it: WAL after a missing segment cannot be replayed
        out.append(wanted[segno])
        segno += 1
    return out


# --------------------------------------------------------------------------- recovery settings

def restore_command(python, tool, config):
    """The collection's restore_command; PostgreSQL runs it through /bin/sh, so every part is quoted."""
    return " ".join(shlex.quote(part) for part in (python, tool, "--config", config)) + " fetch %f %p"


def conf_quote(value):
    """A postgresql.conf string literal."""
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "''")


def recovery_settings(target, timeline, restore_cmd):
    """The settings recovery needs (the action while the restore is verified is always pause:
    the cluster stops at the target read-only; promote happens after the checks)."""
    settings = {"restore_command": restore_cmd,
                "recovery_target_timeline": "latest" if timeline == "latest" else str(timeline)}
    if target["kind"] != "latest":
        settings[target["setting"]] = target["setting_value"]
        settings["recovery_target_action"] = "pause"
        if target["kind"] in ("time", "lsn", "xid"):
            settings["recovery_target_inclusive"] = "on" if target["inclusive"] else "off"
    return settings


BLOCK_BEGIN = "# BEGIN fediflow.dr pitr_restore"
BLOCK_END = "# END fediflow.dr pitr_restore"


def render_block(settings):
    lines = [BLOCK_BEGIN]
    for name in sorted(settings):
        lines.append("%s = %s" % (name, conf_quote(settings[name])))
    lines.append(BLOCK_END)
    return "\n".join(lines) + "\n"


def replace_block(text, settings):
    """``postgresql.auto.conf`` text with our block replaced (or removed when ``settings`` is empty);
    it goes last, so it wins over earlier lines."""
    pattern = re.compile(r"\n?%s\n.*?%s\n?" % (re.escape(BLOCK_BEGIN), re.escape(BLOCK_END)), re.S)
    text = pattern.sub("\n", text or "").rstrip("\n")
    text = text + "\n" if text else ""
    return text + (render_block(settings) if settings else "")


def stamp(now):
    """UTC time to the microsecond: two restores of one data directory in the same second (a module run
    takes ~0.2 s) get different names instead of the second one being refused as "already exists"."""
    return now.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def dir_names(data_dir, now):
    """Where the restore is built and where the old data directory is kept."""
    data_dir = data_dir.rstrip("/")
    return {"new": "%s.pitr-%s" % (data_dir, stamp(now)), "kept": "%s.pre-pitr-%s" % (data_dir, stamp(now))}


def segments_between(start_lsn, end_lsn, segment_size=DEFAULT_SEGMENT_SIZE):
    """Segments recovery replayed from the base backup's start to the reached LSN (inclusive)."""
    if start_lsn is None or end_lsn is None or end_lsn < start_lsn:
        return 0
    return end_lsn // segment_size - start_lsn // segment_size + 1


# --------------------------------------------------------------------------- standbys

def is_standby(standby_signal, running=False, in_recovery=None, recovery_signal=False):
    """Whether a data directory holds a standby: ``standby.signal`` in it, running or stopped (a stopped
    standby is one still, and a failover fences an old primary with that file), or a running server in
    recovery that is not a point-in-time restore paused at its target (no ``recovery.signal``)."""
    if standby_signal:
        return True
    return bool(running and in_recovery and not recovery_signal)


def standby_refusal(data_dir, state, upstream=None):
    """The refusal of an in-place restore of a standby, saying the two ways forward."""
    how = "streaming from %s" % upstream if upstream else \
        "stopped, with standby.signal" if state == "stopped" else "running in recovery"
    return ("data_dir '%s' holds a standby (%s): restored in place it would become a second primary on a forked "
            "history. Run the PITR on the primary (it re-seeds its standbys), or restore beside this one into a "
            "new data directory with switch=false. Nothing was touched." % (data_dir, how))


def next_timeline(timelines, tli):
    """The timeline a promotion after recovery on ``tli`` creates: PostgreSQL takes the first number above it
    that the archive does not know (findNewestTimeLine + 1)."""
    known = set(timelines)
    while tli + 1 in known:
        tli += 1
    return tli + 1


# WAL senders that are no standby: a base backup's, pg_receivewal's
NOT_STANDBYS = ("pg_basebackup", "pg_receivewal")


def _howto(entry, primary, timeline):
    data_dir = entry.get("data_dir") or "DATA_DIR"
    source = "host=%s port=%s user=%s dbname=postgres" % (primary["host"], primary["port"], primary.get("user") or "postgres")
    slot = entry.get("slot") or "SLOT"
    return ("on %s: pg_ctl stop -D %s -m fast; then pg_rewind --target-pgdata=%s --source-server='%s' "
            "--restore-target-wal (when it fails: move %s aside and pg_basebackup --host=%s --port=%s --pgdata=%s "
            "--write-recovery-conf --wal-method=stream --slot=%s); first, on the primary: SELECT "
            "pg_create_physical_replication_slot('%s'); then start it with standby.signal and primary_conninfo "
            "'host=%s port=%s' and check that pg_stat_wal_receiver.received_tli is %s. Never promote it before."
            % (entry["name"], data_dir, data_dir, source, data_dir, primary["host"], primary["port"], data_dir, slot,
               slot, primary["host"], primary["port"], timeline if timeline else "the primary's new timeline"))


def left_behind(replication, members, primary, timeline=None):
    """The standbys a restore in place leaves on the old history, which a later failover could promote:
    every WAL receiver that streamed from the cluster before (``replication``: rows of pg_stat_replication -
    ``application_name``, ``client_addr``, ``state``, ``replay_lsn``) and every ``member`` the caller names (the
    role: the inventory's other database hosts - ``name``, ``host``, ``port``, ``slot``, ``data_dir``,
    ``state``), matched by slot (the application name a standby streams with) or address. Each says what was
    seen and how to re-seed it by hand onto ``primary`` (``host``, ``port``, ``user``) on ``timeline``."""
    rows = [r for r in replication or [] if (r.get("application_name") or "") not in NOT_STANDBYS
            and r.get("state") != "backup"]
    found = []
    for member in members or []:
        match = [r for r in rows if (member.get("slot") and r.get("application_name") == member["slot"])
                 or (member.get("host") and r.get("client_addr") == member["host"])]
        row = match[0] if match else None
        if row:
            rows.remove(row)
        found.append(_entry(member["name"], member, row))
    for row in rows:
        name = row.get("application_name") or row.get("client_addr") or "unnamed"
        found.append(_entry(name, {"host": row.get("client_addr"), "slot": row.get("application_name")}, row,
                            in_inventory=False))
    for entry in found:
        entry["howto"] = _howto(entry, primary, timeline)
    return found


def _entry(name, member, row, in_inventory=True):
    address = member.get("host") or (row or {}).get("client_addr")
    if address and member.get("port"):
        address = "%s:%s" % (address, member["port"])
    return {"name": name, "address": address, "slot": member.get("slot"), "data_dir": member.get("data_dir"),
            "in_inventory": in_inventory, "streamed": row is not None,
            "state_before": (row or {}).get("state") or member.get("state") or "unknown",
            "replay_lsn_before": (row or {}).get("replay_lsn")}
