# -*- coding: utf-8 -*-
# Copyright: fediflow.dr contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DR drill reports (the ``dr_report`` module): step results and recovery objectives turned into
JSON, Markdown, a self-contained HTML page with a timeline picture, and JUnit XML; a history
file of past drills for the trend picture.

The HTML page and the Markdown summary are Jinja2 templates (``plugins/templates/dr_report.html.j2``
and ``dr_report.md.j2``, HTML autoescaped): the module's action plugin reads them, or an operator's
own, on the controller and passes their text (``html_template``, ``md_template``); here they are
compiled (a bad one is refused before anything is touched) and rendered with the report document.
The pictures (timeline, trend) are computed SVG, given to the template ready to place.

Everything up to the bytes of each file is plain data (``build_report``, ``render_*``,
``merge_history``), so pytest checks it without Ansible or a file system. ``ensure`` then
compares those bytes with what ``dest_dir`` holds and writes only the files that differ, each
atomically (temporary file + ``os.replace``), the history last.

Deterministic output: nothing in a report depends on the time it was rendered (the drill's own
times come from its steps or ``drill_time``), so the same drill id with the same input gives
the same bytes and ``changed=false``. The HTML trend of a drill shows the history up to and
including that drill, so a later drill does not change an earlier drill's page.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

from ansible_collections.fediflow.dr.plugins.module_utils import atomic
from ansible_collections.fediflow.dr.plugins.module_utils.common import FediflowError, Timer

REPORT_SCHEMA = "fediflow.dr/drill-report/v1"
HISTORY_SCHEMA = "fediflow.dr/drill-history/v1"
FORMATS = ("json", "md", "html", "junit")
EXTENSIONS = {"json": "json", "md": "md", "html": "html", "junit": "junit.xml"}
FILE_MODE = 0o600
DIR_MODE = 0o700
MASK = "********"
# the formats rendered from a Jinja2 template: format -> the option holding the template's text
TEMPLATE_OPTIONS = {"html": "html_template", "md": "md_template"}
DETAILS_MAX = 240  # characters of a step's details shown in Markdown / HTML / JUnit
RETURNED_ROW_KEYS = ("objective", "label", "target_s", "measured_s", "projected_s", "pass", "result", "source", "note")
# the measurements a failover drill times from the outage: they include the outage detection
DETECTION_OBJECTIVES = ("rto_critical_s", "rto_full_system_s", "first_notification_s")
DETECTION_SOURCES = ("region-failover",)
DETECTION_KEYS = ("measured_s", "interval_s", "threshold", "production_interval_s", "production_threshold",
                  "production_timeout_s", "objectives", "sources")

# The runbook's table (DESIGN.md): key -> (target seconds, label)
DEFAULT_OBJECTIVES = {
    "rto_critical_s": (900, "RTO critical services"),
    "rto_standard_s": (3600, "RTO standard services"),
    "rto_non_critical_s": (14400, "RTO non-critical services"),
    "rto_full_system_s": (86400, "RTO full system"),
    "rpo_database_s": (300, "RPO database (continuous replication)"),
    "rpo_file_storage_s": (900, "RPO file storage (snapshot frequency)"),
    "rpo_configuration_s": (3600, "RPO configuration (versioned backups)"),
    "data_loss_tolerance_critical_s": (60, "data-loss tolerance, critical data"),
    # the communication plan: outage start -> first notification delivered (fediflow.dr.incident)
    "first_notification_s": (900, "time to first notification (communication plan)"),
}

# a details key with one of these words (snake_case, kebab-case or camelCase) is masked
SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "tokens", "key", "apikey",
    "credential", "credentials", "authorization", "cookie", "private", "webhook"})
DROPPED_DETAILS = ("invocation",)  # a registered result's module_args: not a result
_DRILL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@")
_SECRET_ASSIGN = re.compile(r"(?i)\b(password|passwd|secret|token|api_key|apikey)=[^\s&;,]+")
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# ---------------------------------------------------------------- small helpers

def fmt_s(value):
    """Seconds as a short decimal: 900, 0.012, 1234.5; '-' for None."""
    if value is None:
        return "-"
    text = "%.3f" % float(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_dur(seconds):
    """A duration for people: 12.3s, 4m05s, 5m, 2h03m, 1h, 3d04h."""
    seconds = float(seconds)
    if seconds < 60:
        return "%ss" % fmt_s(round(seconds, 1))
    if seconds < 3600:
        big, small, units = seconds // 60, int(seconds % 60), "ms"
    elif seconds < 86400:
        big, small, units = seconds // 3600, int((seconds % 3600) // 60), "hm"
    else:
        big, small, units = seconds // 86400, int((seconds % 86400) // 3600), "dh"
    return "%d%s%02d%s" % (big, units[0], small, units[1]) if small else "%d%s" % (big, units[0])


def iso(moment):
    """UTC ISO 8601 with a Z; milliseconds only when there are any."""
    moment = moment.astimezone(timezone.utc)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_time(value, option):
    """ISO 8601 with a zone (``2026-05-01T12:00:00Z``, ``+02:00``) or epoch seconds (number or
    numeric string) as an aware UTC datetime. A time without a zone is refused: it would be read
    in the zone of whichever host renders the report."""
    if _number(value):
        if not math.isfinite(value):
            raise FediflowError("%s must be a finite number of epoch seconds, got %r" % (option, value))
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if not isinstance(value, str) or not value.strip():
        raise FediflowError("%s must be an ISO 8601 time with a zone or epoch seconds, got %r" % (option, value))
    text = value.strip()
    try:
        return datetime.fromtimestamp(float(text), tz=timezone.utc)
    except (ValueError, OverflowError):
        pass
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FediflowError("%s: %r is not an ISO 8601 time (like 2026-05-01T12:00:00Z) nor epoch seconds"
                            % (option, value))
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise FediflowError("%s: %r has no time zone; add one (Z or +00:00)" % (option, value))
    return moment.astimezone(timezone.utc)


def _key_words(name):
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    return set(w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w)


def is_secret_key(name):
    return bool(_key_words(name) & SECRET_WORDS)


def mask_text(text):
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    return _SECRET_ASSIGN.sub(lambda m: m.group(1) + "=" + MASK, text)


def mask_details(value):
    """A copy of ``value`` with secret-looking keys masked, URL passwords and ``password=`` values
    in strings masked, and a registered result's ``invocation`` / ``_ansible*`` keys dropped."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            key = str(key)
            if key in DROPPED_DETAILS or key.startswith("_ansible"):
                continue
            if is_secret_key(key) and item not in (None, "", [], {}):
                out[key] = MASK
            else:
                out[key] = mask_details(item)
        return out
    if isinstance(value, (list, tuple)):
        return [mask_details(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return mask_text(str(value))


def compact(value, limit=DETAILS_MAX):
    """One line of JSON, cut at ``limit`` characters."""
    if value in (None, {}, []):
        return ""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _one_line(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


# ---------------------------------------------------------------- input

def normalize_objectives(given):
    """``objectives`` merged over the runbook's table. A value is a number (the target, as the
    inventory's ``fediflow_objectives`` has it) or a dict ``{target_s, label}``."""
    out = {key: {"target_s": target, "label": label} for key, (target, label) in DEFAULT_OBJECTIVES.items()}
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise FediflowError("objectives must be a dict of objective key -> target seconds or {target_s, label}")
    for key, value in given.items():
        option = "objectives.%s" % key
        if not re.match(r"^[A-Za-z0-9_.-]+$", str(key)):
            raise FediflowError("%s: objective keys are letters, digits, '_', '.', '-'" % option)
        label = out.get(key, {}).get("label", str(key))
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"target_s", "label"})
            if unknown:
                raise FediflowError("%s: unknown field(s) %s (target_s, label)" % (option, ", ".join(unknown)))
            label = str(value.get("label") or label)
            target = value.get("target_s", out.get(key, {}).get("target_s"))
        else:
            target = value
        if isinstance(target, str):
            try:
                target = float(target)
            except ValueError:
                pass
        if not _number(target) or not math.isfinite(target) or target <= 0:
            raise FediflowError("%s: target_s must be a number of seconds > 0, got %r" % (option, target))
        if isinstance(target, float) and target.is_integer():
            target = int(target)
        out[str(key)] = {"target_s": target, "label": label}
    return out


def kind_of(key):
    key = key.lower()
    if key.startswith("rto"):
        return "rto"
    if key.startswith("rpo"):
        return "rpo"
    return "other"


def add_months(day, months):
    """``day`` plus whole calendar months, the day clamped to the month's last (31 Jan + 1 month = 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


def interval_text(v):
    if v["drill_interval_days"] is not None:
        return "every %d day%s" % (v["drill_interval_days"], "" if v["drill_interval_days"] == 1 else "s")
    months = v["drill_interval_months"]
    return "every month" if months == 1 else "every %d months" % months


def _seconds(value, option, minimum=0.0):
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not _number(value) or not math.isfinite(value) or value < minimum:
        raise FediflowError("%s must be a number >= %s, got %r" % (option, fmt_s(minimum), value))
    return float(value)


def normalize_detection(given):
    """The outage detection a drill ran with against the production settings; None without it.

    ``shortened``: the drill detected with fewer or faster checks than production
    (``interval_s`` x ``threshold`` below ``production_interval_s`` x ``production_threshold``). Production's
    worst case is ``production_threshold`` checks ``production_interval_s`` apart after the outage began just
    after a passing check, the last one waiting ``production_timeout_s``:
    ``production_interval_s * production_threshold + production_timeout_s``."""
    if given in (None, {}):
        return None
    if not isinstance(given, dict):
        raise FediflowError("detection must be a dict (%s)" % ", ".join(DETECTION_KEYS))
    unknown = sorted(set(given) - set(DETECTION_KEYS))
    if unknown:
        raise FediflowError("detection: unknown field(s) %s (%s)" % (", ".join(unknown), ", ".join(DETECTION_KEYS)))
    missing = [k for k in ("interval_s", "threshold", "production_interval_s", "production_threshold")
               if given.get(k) in (None, "")]
    if missing:
        raise FediflowError("detection.%s is required" % ", detection.".join(missing))
    out = {"measured_s": _seconds(given.get("measured_s") or 0, "detection.measured_s"),
           "interval_s": _seconds(given["interval_s"], "detection.interval_s"),
           "threshold": int(_seconds(given["threshold"], "detection.threshold", 1)),
           "production_interval_s": _seconds(given["production_interval_s"], "detection.production_interval_s"),
           "production_threshold": int(_seconds(given["production_threshold"], "detection.production_threshold", 1)),
           "production_timeout_s": _seconds(given.get("production_timeout_s") or 0, "detection.production_timeout_s")}
    for key, default in (("objectives", DETECTION_OBJECTIVES), ("sources", DETECTION_SOURCES)):
        value = given.get(key)
        if value in (None, ""):
            value = list(default)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            raise FediflowError("detection.%s must be a list of names, got %r" % (key, value))
        out[key] = list(value)
    out["production_worst_case_s"] = round(
        out["production_interval_s"] * out["production_threshold"] + out["production_timeout_s"], 3)
    out["shortened"] = out["interval_s"] * out["threshold"] < out["production_interval_s"] * out["production_threshold"]
    out["note"] = ("detection in this drill: %d checks %s s apart (%s s measured); production: %d checks %s s apart"
                   "%s = %s s worst case" % (
                       out["threshold"], fmt_s(out["interval_s"]), fmt_s(out["measured_s"]),
                       out["production_threshold"], fmt_s(out["production_interval_s"]),
                       " + %s s timeout" % fmt_s(out["production_timeout_s"]) if out["production_timeout_s"] else "",
                       fmt_s(out["production_worst_case_s"])))
    return out


def project(measurements, detection):
    """``projected_s`` of each measurement that includes a shortened detection: the measured time with the
    drill's detection replaced by production's worst case. Others get None."""
    out = []
    for item in measurements:
        projected = None
        if (detection and detection["shortened"] and item["measured_s"] is not None
                and item["objective"] in detection["objectives"] and item["source"] in detection["sources"]):
            projected = round(max(item["measured_s"] - detection["measured_s"], 0.0)
                              + detection["production_worst_case_s"], 3)
        out.append(dict(item, projected_s=projected))
    return out


def normalize_steps(steps):
    out = []
    for index, step in enumerate(steps or []):
        option = "steps[%d]" % index
        if not isinstance(step, dict):
            raise FediflowError("%s must be a dict with at least a name" % option)
        name = step.get("name")
        if not name or not str(name).strip():
            raise FediflowError("%s.name is required" % option)
        option = "steps[%d] (%s)" % (index, name)
        details = step.get("details")
        if details is None:
            details = {}
        if not isinstance(details, dict):
            raise FediflowError("%s.details must be a dict" % option)
        start = parse_time(step["start"], option + ".start") if step.get("start") not in (None, "") else None
        end = parse_time(step["end"], option + ".end") if step.get("end") not in (None, "") else None
        duration = step.get("duration_s")
        if duration is not None:
            if not _number(duration) or not math.isfinite(duration) or duration < 0:
                raise FediflowError("%s.duration_s must be a number of seconds >= 0, got %r" % (option, duration))
        if start and end:
            if end < start:
                raise FediflowError("%s.end (%s) is before its start (%s)" % (option, iso(end), iso(start)))
            duration = (end - start).total_seconds()
        elif start and duration is not None:
            end = start + timedelta(seconds=duration)
        elif end and duration is not None:
            start = end - timedelta(seconds=duration)
        skipped = step.get("skipped")
        if skipped is None:
            skipped = bool(details.get("skipped", False))
        ok = step.get("ok")
        if ok is None:
            ok = not bool(details.get("failed", False))
        message = step.get("msg")
        if not message:
            message = details.get("msg") or details.get("error") or ""
        if isinstance(message, (list, dict)):
            message = compact(message, 1000)
        status = "skipped" if skipped else ("ok" if ok else "failed")
        masked = mask_details(details)
        out.append({
            "name": str(name),
            "region": str(step["region"]) if step.get("region") not in (None, "") else None,
            "start": iso(start) if start else None,
            "end": iso(end) if end else None,
            "duration_s": round(duration, 3) if duration is not None else None,
            "ok": bool(ok),
            "skipped": bool(skipped),
            "status": status,
            "msg": mask_text(_one_line(message)) if message else "",
            "details": masked,
            "_start": start,
            "_end": end,
        })
    return out


def normalize_measurements(measurements, objectives):
    out = []
    for index, item in enumerate(measurements or []):
        option = "measurements[%d]" % index
        if not isinstance(item, dict):
            raise FediflowError("%s must be a dict with objective and measured_s" % option)
        key = item.get("objective")
        if key not in objectives:
            raise FediflowError("%s.objective %r is not a key of objectives (%s)"
                                % (option, key, ", ".join(sorted(objectives))))
        measured = item.get("measured_s")
        if isinstance(measured, str) and measured.strip():
            try:
                measured = float(measured)
            except ValueError:
                pass
        elif isinstance(measured, str):
            measured = None
        if measured is not None and (not _number(measured) or not math.isfinite(measured) or measured < 0):
            raise FediflowError("%s.measured_s must be seconds >= 0 or null (not measured), got %r" % (option, measured))
        out.append({"objective": key, "measured_s": None if measured is None else round(float(measured), 3),
                    "source": item.get("source") or None, "note": item.get("note") or None})
    return out


def evaluate(objectives, measurements):
    """One row per measurement, and one ``not run`` row per objective nothing measured.
    ``pass``: measured <= target, and the production projection (``projected_s``, when the drill shortened
    the detection) <= target too; null when not measured (neither passed nor failed)."""
    rows = []
    for key, obj in objectives.items():
        items = [m for m in measurements if m["objective"] == key] or [
            {"objective": key, "measured_s": None, "source": None, "note": None}]
        for item in items:
            measured = item["measured_s"]
            projected = item.get("projected_s")
            # a drill that shortened something is judged on the production projection too: it must not flatter
            passed = None if measured is None else (measured <= obj["target_s"]
                                                    and (projected is None or projected <= obj["target_s"]))
            rows.append({
                "objective": key,
                "label": obj["label"],
                "kind": kind_of(key),
                "target_s": obj["target_s"],
                "measured_s": measured,
                "projected_s": projected,
                "pass": passed,
                "result": "NOT RUN" if passed is None else ("PASS" if passed else "FAIL"),
                "source": item["source"],
                "note": item["note"],
            })
    return rows


def row_title(row):
    return "%s: %s" % (row["label"], row["note"]) if row.get("note") else row["label"]


def validate(p):
    """Every option checked before anything is touched; returns the normalized input."""
    dest_dir = p.get("dest_dir")
    if not dest_dir:
        raise FediflowError("dest_dir is required")
    if os.path.exists(dest_dir) and not os.path.isdir(dest_dir):
        raise FediflowError("dest_dir %s exists and is not a directory" % dest_dir)
    formats = list(p.get("formats") or FORMATS)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise FediflowError("formats: unknown %s (choose from %s)" % (", ".join(bad), ", ".join(FORMATS)))
    keep = p.get("keep_history", 100)
    if keep is None or keep < 0:
        raise FediflowError("keep_history must be >= 0 (0 keeps no history), got %r" % keep)
    days = p.get("drill_interval_days")
    if days is not None and days < 1:
        raise FediflowError("drill_interval_days must be >= 1, got %r" % days)
    months = p.get("drill_interval_months", 1)
    if months is None or months < 1:
        raise FediflowError("drill_interval_months must be >= 1, got %r" % months)
    detection = normalize_detection(p.get("detection"))
    drill_id = p.get("drill_id")
    if drill_id is not None and (not _DRILL_ID.match(str(drill_id)) or str(drill_id) in ("latest", "history")):
        raise FediflowError("drill_id %r must be 1-128 of letters, digits, '.', '_', '-' (starting with a letter or "
                            "digit) and not 'latest' or 'history': it names the report files" % drill_id)
    objectives = normalize_objectives(p.get("objectives"))
    steps = normalize_steps(p.get("steps"))
    measurements = project(normalize_measurements(p.get("measurements"), objectives), detection)
    not_run = []
    for index, item in enumerate(p.get("not_run") or []):
        if not isinstance(item, dict) or not item.get("scenario"):
            raise FediflowError("not_run[%d].scenario is required" % index)
        not_run.append({"scenario": str(item["scenario"]), "why": str(item.get("why") or "")})
    drill_time = None
    if p.get("drill_time") not in (None, ""):
        drill_time = parse_time(p["drill_time"], "drill_time")
    history_file = p.get("history_file") or os.path.join(dest_dir, "history.jsonl")
    if os.path.isdir(history_file):
        raise FediflowError("history_file %s is a directory" % history_file)
    templates = {fmt: compile_template(fmt, p.get(option)) for fmt, option in TEMPLATE_OPTIONS.items() if fmt in formats}
    return {"dest_dir": dest_dir, "formats": [f for f in FORMATS if f in formats], "keep_history": keep, "templates": templates,
            "drill_interval_days": days, "drill_interval_months": None if days is not None else months,
            "detection": detection, "drill_id": drill_id, "objectives": objectives, "steps": steps,
            "measurements": measurements, "not_run": not_run, "drill_time": drill_time,
            "history_file": history_file, "title": p.get("title") or "FediFlow DR drill"}


# ---------------------------------------------------------------- the report document

def build_report(v, now):
    """The JSON document (schema ``fediflow.dr/drill-report/v1``) from validated input."""
    starts = [s["_start"] for s in v["steps"] if s["_start"]]
    ends = [s["_end"] for s in v["steps"] if s["_end"]]
    started = v["drill_time"] or (min(starts) if starts else now)
    finished = max(ends) if ends else None
    drill_id = v["drill_id"] or "drill-%s" % started.strftime("%Y%m%dT%H%M%SZ")
    rows = evaluate(v["objectives"], v["measurements"])
    failed_objectives = [row_title(r) for r in rows if r["pass"] is False]
    failed_steps = [s["name"] for s in v["steps"] if s["status"] == "failed"]
    steps = [{k: val for k, val in s.items() if not k.startswith("_")} for s in v["steps"]]
    if v["drill_interval_days"] is not None:
        next_drill = started.date() + timedelta(days=v["drill_interval_days"])
    else:
        next_drill = add_months(started.date(), v["drill_interval_months"])
    detection = None
    if v["detection"]:
        detection = {k: val for k, val in v["detection"].items() if k not in ("objectives", "sources")}
    return {
        "schema": REPORT_SCHEMA,
        "drill_id": drill_id,
        "title": v["title"],
        "started": iso(started),
        "finished": iso(finished) if finished else None,
        "duration_s": round((finished - min(starts)).total_seconds(), 3) if finished and starts else None,
        "ok": not failed_steps and not failed_objectives,
        "failed_objectives": failed_objectives,
        "failed_steps": failed_steps,
        "objectives": rows,
        "steps": steps,
        "not_run": v["not_run"],
        "drill_interval_days": v["drill_interval_days"],
        "drill_interval_months": v["drill_interval_months"],
        "drill_interval": interval_text(v),
        "next_drill": next_drill.isoformat(),
        "detection": detection,
    }


def summary_table(report):
    """The plain-text table ``make drill`` prints."""
    projected = any(row["projected_s"] is not None for row in report["objectives"])
    head = ("objective", "target s", "measured s") + (("production s",) if projected else ()) + ("result",)
    form = "%-64s %9s %11s" + (" %12s" if projected else "") + "  %s"
    lines = [form % head]
    for row in report["objectives"]:
        cells = (row_title(row), fmt_s(row["target_s"]), fmt_s(row["measured_s"]))
        cells += ((fmt_s(row["projected_s"]),) if projected else ()) + (row["result"],)
        lines.append(form % cells)
    if projected:
        lines.append("production s: %s - the RTO with the production detection (%s)" % (
            "the drill shortened the outage detection", report["detection"]["note"]))
    if report["failed_steps"]:
        lines.append("FAILED STEPS: %s" % ", ".join(report["failed_steps"]))
    if report["not_run"]:
        lines.append("NOT RUN: %s" % ", ".join(s["scenario"] for s in report["not_run"]))
    lines.append("overall: %s   next drill: %s" % ("PASS" if report["ok"] else "FAIL", report["next_drill"]))
    return "\n".join(lines)


# ---------------------------------------------------------------- history

def history_entry(report):
    objectives = {}
    for row in report["objectives"]:
        entry = objectives.setdefault(row["objective"], {"label": row["label"], "kind": row["kind"],
                                                         "target_s": row["target_s"], "measured_s": None,
                                                         "pass": None})
        if row["measured_s"] is not None and (entry["measured_s"] is None or row["measured_s"] > entry["measured_s"]):
            entry["measured_s"] = row["measured_s"]  # the worst measurement of the drill
        if row["pass"] is False or (row["pass"] is True and entry["pass"] is None):
            entry["pass"] = row["pass"]
    return {"schema": HISTORY_SCHEMA, "drill_id": report["drill_id"], "started": report["started"],
            "ok": report["ok"], "objectives": objectives}


def history_line(entry):
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def parse_history(text):
    """``[(line, entry or None)]`` - a line that is not a history entry is kept as it is."""
    out = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or entry.get("schema") != HISTORY_SCHEMA or not entry.get("drill_id"):
            entry = None
        out.append((line, entry))
    return out


def merge_history(parsed, entry, keep):
    """The history with ``entry`` in it: replacing the line of the same drill id in place, else
    appended; the last ``keep`` lines kept. Returns ``(lines, trend)``: ``trend`` is the entries
    up to and including this drill."""
    line = history_line(entry)
    lines = [l for l, _e in parsed]
    entries = [e for _l, e in parsed]
    index = next((i for i, e in enumerate(entries) if e and e["drill_id"] == entry["drill_id"]), None)
    if index is None:
        lines.append(line)
        entries.append(entry)
        index = len(lines) - 1
    else:
        lines[index] = line
        entries[index] = entry
    drop = max(0, len(lines) - keep)
    lines, entries, index = lines[drop:], entries[drop:], index - drop
    trend = [e for e in entries[:index + 1] if e]
    return lines, trend


# ---------------------------------------------------------------- renderers

def render_json(report):
    return json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _md(text):
    """A Markdown table cell: backslashes and pipes escaped, on one line."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(report, template, trend):
    """The Markdown summary from ``template`` (compiled by ``compile_template("md", ...)``)."""
    return render_template(template, report, trend)


def _xml_text(text):
    return _XML_BAD.sub("\ufffd", str(text))


def render_junit(report):
    """JUnit XML: a testcase per objective row, per step and per scenario not run."""
    cases = []
    for row in report["objectives"]:
        case = ET.Element("testcase", name=_xml_text(row_title(row)), classname="objectives.%s" % row["objective"],
                          time="0")
        if row["pass"] is False:
            worst = max(row["measured_s"], row["projected_s"] or 0)
            failure = ET.SubElement(case, "failure", type="objective_missed",
                                    message="%s %s s > target %s s" % (
                                        "measured" if worst == row["measured_s"] else "production projection",
                                        fmt_s(worst), fmt_s(row["target_s"])))
            failure.text = _xml_text("%s: measured %s s%s, target %s s%s" % (
                row["label"], fmt_s(row["measured_s"]),
                ", with the production detection %s s" % fmt_s(row["projected_s"]) if row["projected_s"] is not None else "",
                fmt_s(row["target_s"]), " (source: %s)" % row["source"] if row["source"] else ""))
        elif row["pass"] is None:
            ET.SubElement(case, "skipped", message="not measured: NOT RUN (target %s s)" % fmt_s(row["target_s"]))
        else:
            ET.SubElement(case, "system-out").text = "measured %s s%s <= target %s s" % (
                fmt_s(row["measured_s"]),
                ", with the production detection %s s" % fmt_s(row["projected_s"]) if row["projected_s"] is not None else "",
                fmt_s(row["target_s"]))
        cases.append(case)
    for step in report["steps"]:
        case = ET.Element("testcase", name=_xml_text(step["name"]),
                          classname=_xml_text("steps.%s" % (step["region"] or "all")),
                          time=fmt_s(step["duration_s"] or 0))
        if step["status"] == "failed":
            failure = ET.SubElement(case, "failure", type="step_failed", message=_xml_text(step["msg"] or "step failed"))
            failure.text = _xml_text(compact(step["details"], 4000))
        elif step["status"] == "skipped":
            ET.SubElement(case, "skipped", message=_xml_text(step["msg"] or "skipped"))
        cases.append(case)
    for scenario in report["not_run"]:
        case = ET.Element("testcase", name=_xml_text(scenario["scenario"]), classname="not_run", time="0")
        ET.SubElement(case, "skipped", message=_xml_text("NOT RUN: %s" % scenario["why"]))
        cases.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": str(skipped),
              "time": fmt_s(report["duration_s"] or 0)}
    root = ET.Element("testsuites", name=_xml_text(report["title"]), **counts)
    suite = ET.SubElement(root, "testsuite", name=_xml_text("%s %s" % (report["title"], report["drill_id"])),
                          timestamp=report["started"], **counts)
    props = ET.SubElement(suite, "properties")
    for name in ("drill_id", "started", "finished", "next_drill"):
        ET.SubElement(props, "property", name=name, value=_xml_text(report[name] or ""))
    suite.extend(cases)
    if hasattr(ET, "indent"):
        ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------- HTML and SVG

COLORS = {"ok": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e"}
PALETTE = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e", "#283593")
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
              172800, 604800)


def _e(text):
    return html.escape(str(text), quote=True)


def tick_step(span, wanted=8):
    for step in NICE_STEPS:
        if span / step <= wanted:
            return step
    return NICE_STEPS[-1] * math.ceil(span / NICE_STEPS[-1] / wanted)


def svg_timeline(report, width=1000):
    """Steps as bars on a time axis (one ``rect`` per drawn step, nothing else is a rect) and
    the RTO targets that fall on the axis as vertical dashed lines."""
    steps = [s for s in report["steps"] if s["start"] and s["end"]]
    label_w, pad, row_h, top = 260, 20, 24, 34
    height = top + max(1, len(steps)) * row_h + 30
    out = ['<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'role="img" aria-label="timeline of the drill steps">' % (width, height, width, height)]
    if not steps:
        out.append('<text x="10" y="%d" class="muted">no step has a start and an end time</text>' % (top + 16))
        out.append("</svg>")
        return "\n".join(out)
    t0 = min(parse_time(s["start"], "start") for s in steps)
    t1 = max(parse_time(s["end"], "end") for s in steps)
    span = max((t1 - t0).total_seconds(), 1.0)
    plot_w = width - label_w - pad

    def x_of(seconds):
        return label_w + plot_w * seconds / span

    bottom = top + len(steps) * row_h
    step = tick_step(span)
    tick = 0
    while tick <= span + 1e-9:
        x = x_of(tick)
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="grid"/>' % (x, top - 4, x, bottom))
        out.append('<text x="%.1f" y="%d" text-anchor="middle" class="tick">+%s</text>'
                   % (x, top - 8, _e(fmt_dur(tick) if tick else "0")))
        tick += step
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" class="axis"/>' % (label_w, bottom, width - pad, bottom))
    out.append('<text x="%d" y="%d" class="tick">%s (UTC)</text>' % (label_w, bottom + 16, _e(iso(t0))))
    for i, s in enumerate(steps):
        y = top + i * row_h
        start = (parse_time(s["start"], "start") - t0).total_seconds()
        bar_w = max(2.0, plot_w * (s["duration_s"] or 0) / span)
        label = "%s%s" % (s["name"], " [%s]" % s["region"] if s["region"] else "")
        if len(label) > 38:
            label = label[:37] + "\u2026"
        out.append('<text x="%d" y="%d" text-anchor="end" class="label">%s</text>' % (label_w - 8, y + 16, _e(label)))
        out.append('<rect class="step %s" x="%.1f" y="%d" width="%.1f" height="%d" rx="2" fill="%s">'
                   '<title>%s</title></rect>' % (
                       s["status"], x_of(start), y + 4, bar_w, row_h - 8, COLORS[s["status"]],
                       _e("%s: %s, %s (%s - %s)%s" % (
                           label, s["status"].upper(), fmt_dur(s["duration_s"] or 0), s["start"], s["end"],
                           " - " + s["msg"] if s["msg"] else ""))))
    seen = set()
    for row in report["objectives"]:
        if row["kind"] != "rto" or row["objective"] in seen:
            continue
        seen.add(row["objective"])
        if row["target_s"] <= span:
            x = x_of(row["target_s"])
            out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="rto"><title>%s</title></line>'
                       % (x, top - 4, x, bottom + 4, _e("%s target: %s s" % (row["label"], fmt_s(row["target_s"])))))
            out.append('<text x="%.1f" y="%d" text-anchor="end" class="rtolabel">%s %s</text>'
                       % (x - 3, bottom + 16, _e(row["label"]), _e(fmt_dur(row["target_s"]))))
    out.append("</svg>")
    return "\n".join(out)


def svg_trend(trend, width=1000, height=260):
    """Measured / target of every objective over the history entries (100% = the target)."""
    left, right, top, bottom = 60, 20, 20, 50
    series = {}
    for entry in trend:
        for key, obj in (entry.get("objectives") or {}).items():
            if obj.get("measured_s") is not None:
                series.setdefault(key, obj.get("label") or key)
    out = ['<svg id="trend" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'role="img" aria-label="measured versus target over past drills">' % (width, height, width, height)]
    ratios = []
    for entry in trend:
        for obj in (entry.get("objectives") or {}).values():
            if obj.get("measured_s") is not None and obj.get("target_s"):
                ratios.append(obj["measured_s"] / obj["target_s"])
    y_max = min(3.0, max([1.25] + [r * 1.1 for r in ratios]))
    plot_w, plot_h = width - left - right, height - top - bottom

    def y_of(ratio):
        return top + plot_h * (1 - min(ratio, y_max) / y_max)

    def x_of(i):
        return left + (plot_w * (i + 0.5) / len(trend) if trend else 0)

    for pct in (0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        if pct <= y_max:
            out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="%s"/>' % (
                left, y_of(pct), width - right, y_of(pct), "target" if pct == 1.0 else "grid"))
            out.append('<text x="%d" y="%.1f" text-anchor="end" class="tick">%d%%</text>' % (left - 6, y_of(pct) + 4, pct * 100))
    out.append('<text x="%d" y="%.1f" class="tick">target</text>' % (width - right - 40, y_of(1.0) - 4))
    for i, entry in enumerate(trend):
        out.append('<text x="%.1f" y="%d" text-anchor="middle" class="tick">%s</text>'
                   % (x_of(i), height - bottom + 16, _e(str(entry.get("started", ""))[:10])))
    if not series:
        out.append('<text x="%d" y="%d" class="muted">nothing measured yet</text>' % (left + 10, top + 20))
    for n, (key, label) in enumerate(sorted(series.items())):
        color = PALETTE[n % len(PALETTE)]
        points = []
        for i, entry in enumerate(trend):
            obj = (entry.get("objectives") or {}).get(key) or {}
            if obj.get("measured_s") is None or not obj.get("target_s"):
                continue
            ratio = obj["measured_s"] / obj["target_s"]
            points.append((x_of(i), y_of(ratio), entry, obj))
        if len(points) > 1:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                       % (color, " ".join("%.1f,%.1f" % (px, py) for px, py, _en, _ob in points)))
        for px, py, entry, obj in points:
            out.append('<circle cx="%.1f" cy="%.1f" r="4" fill="%s" data-objective="%s"><title>%s</title></circle>' % (
                px, py, color, _e(key), _e("%s - %s: measured %s s, target %s s" % (
                    entry.get("drill_id"), label, fmt_s(obj["measured_s"]), fmt_s(obj["target_s"])))))
    out.append("</svg>")
    legend = "".join('<span class="key"><span class="swatch" style="background:%s"></span>%s</span>'
                     % (PALETTE[n % len(PALETTE)], _e(label)) for n, (_k, label) in enumerate(sorted(series.items())))
    return "\n".join(out) + '\n<p class="legend">%s</p>' % legend


def render_html(report, template, trend):
    """The HTML page from ``template`` (compiled by ``compile_template("html", ...)``)."""
    return render_template(template, report, trend)


# ---------------------------------------------------------------- templates

def shipped_template(fmt):
    """Path of the collection's own template of ``fmt`` (``plugins/templates/dr_report.<fmt>.j2``). It exists
    on the controller, where the collection is installed; the action plugin reads it there."""
    plugins = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(plugins, "templates", "dr_report.%s.j2" % fmt)


def _jinja():
    try:
        import jinja2  # pylint: disable=import-outside-toplevel
        import jinja2.sandbox  # pylint: disable=import-outside-toplevel
        import markupsafe  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise FediflowError("the HTML and Markdown reports are rendered with Jinja2, which the Python on this host "
                            "lacks: install it (Debian python3-jinja2, pip Jinja2) or ask only formats json and junit")
    return jinja2, jinja2.sandbox, markupsafe


def compile_template(fmt, text):
    """The Jinja2 template of ``fmt`` from its text, refused (naming the option) when missing or malformed.
    HTML is autoescaped: every value in a report came from a run and may hold hostile text. Sandboxed,
    undefined names are errors; ``trim_blocks`` / ``lstrip_blocks`` so a block tag on its own line leaves none."""
    option = TEMPLATE_OPTIONS[fmt]
    if not isinstance(text, str) or not text.strip():
        raise FediflowError("%s: the text of a Jinja2 template is required for the %s report (the dr_report action "
                            "plugin passes the collection's own when the option is empty)" % (option, fmt))
    jinja2, sandbox, _markupsafe = _jinja()
    env = sandbox.SandboxedEnvironment(autoescape=fmt == "html", undefined=jinja2.StrictUndefined, trim_blocks=True,
                                       lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update({"fmt_s": fmt_s, "fmt_dur": fmt_dur, "compact": compact, "row_title": row_title, "md": _md})
    try:
        template = env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise FediflowError("%s: not a Jinja2 template: line %s: %s" % (option, exc.lineno, exc.message))
    return {"option": option, "template": template}


def render_template(compiled, report, trend):
    """A compiled template rendered with the report document, the trend entries and what a page shows
    beside them (the verdict, the pictures as SVG); a template that fails names its option."""
    _jinja2, _sandbox, markupsafe = _jinja()
    context = {
        "report": report,
        "trend": trend,
        "verdict": "PASS" if report["ok"] else "FAIL",
        "projected": any(row["projected_s"] is not None for row in report["objectives"]),
        "untimed": [s["name"] for s in report["steps"] if not (s["start"] and s["end"])],
        "colors": dict(COLORS),
        "timeline_svg": markupsafe.Markup(svg_timeline(report)),
        "trend_svg": markupsafe.Markup(svg_trend(trend)),
    }
    try:
        return compiled["template"].render(context)
    except Exception as exc:  # pylint: disable=broad-except
        # an operator's template: undefined names, a sandbox refusal, a filter given the wrong type
        raise FediflowError("%s: rendering failed: %s: %s" % (compiled["option"], type(exc).__name__, _one_line(exc)))


# ---------------------------------------------------------------- files

def report_files(v, report, trend):
    """``{format: content}`` of the report files to write."""
    templates = v["templates"]
    renderers = {"json": lambda: render_json(report), "md": lambda: render_markdown(report, templates["md"], trend),
                 "html": lambda: render_html(report, templates["html"], trend), "junit": lambda: render_junit(report)}
    return {fmt: renderers[fmt]() for fmt in v["formats"]}


def read_text(path):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise FediflowError("cannot read %s: %s" % (path, exc))


def _digest(text):
    return "sha256:%s, %d bytes" % (hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], len(text.encode("utf-8")))


def plan(wanted):
    """``wanted`` is ``[(path, content)]``; returns the entries whose file differs, each with
    the current content's state (absent or a digest) for the diff."""
    changes = []
    for path, content in wanted:
        current = read_text(path)
        if current != content:
            changes.append({"path": path, "before": "absent" if current is None else _digest(current),
                            "after": _digest(content)})
    return changes


def ensure(p, check_mode=False, warn=None, now=None):
    """Validate, render, compare with ``dest_dir``, write what differs (history last)."""
    timer = Timer()
    now = now or datetime.now(timezone.utc)
    with timer.phase("validate"):
        v = validate(p)
    with timer.phase("render"):
        report = build_report(v, now)
        history_path = v["history_file"] if v["keep_history"] else None
        parsed = []
        if history_path:
            parsed = parse_history(read_text(history_path))
            bad = sum(1 for _l, e in parsed if e is None)
            if bad and warn:
                warn("history_file %s: %d line(s) are not drill history entries; kept as they are, left out "
                     "of the trend" % (history_path, bad))
            lines, trend = merge_history(parsed, history_entry(report), v["keep_history"])
        else:
            lines, trend = [], [history_entry(report)]
        contents = report_files(v, report, trend)
    files = {fmt: None for fmt in FORMATS}
    files["history"] = history_path
    wanted = []
    for fmt, content in contents.items():
        files[fmt] = os.path.join(v["dest_dir"], "%s.%s" % (report["drill_id"], EXTENSIONS[fmt]))
        wanted.append((files[fmt], content))
        wanted.append((os.path.join(v["dest_dir"], "latest.%s" % EXTENSIONS[fmt]), content))
    if history_path:
        wanted.append((history_path, "\n".join(lines) + "\n"))
    changes = plan(wanted)
    changed_paths = [c["path"] for c in changes]
    result = {
        "changed": bool(changes),
        "ok": report["ok"],
        "drill_id": report["drill_id"],
        "files": files,
        "changed_files": changed_paths,
        "objectives": [{k: row[k] for k in RETURNED_ROW_KEYS} for row in report["objectives"]],
        "failed_objectives": report["failed_objectives"],
        "failed_steps": report["failed_steps"],
        "not_run": report["not_run"],
        "next_drill": report["next_drill"],
        "summary": summary_table(report),
        "history_entries": sum(1 for _l, e in parse_history("\n".join(lines)) if e),
        "diff": {"before": "".join("%s: %s\n" % (c["path"], c["before"]) for c in changes),
                 "after": "".join("%s: %s\n" % (c["path"], c["after"]) for c in changes)},
    }
    if changes and not check_mode:
        written = []
        target = v["dest_dir"]
        with timer.phase("write"):
            try:
                for directory in (v["dest_dir"], os.path.dirname(os.path.abspath(history_path or v["dest_dir"]))):
                    target = directory
                    if not os.path.isdir(directory):
                        os.makedirs(directory, mode=DIR_MODE)
                by_path = dict(wanted)
                for target in changed_paths:  # in the order of ``wanted``: the history comes last
                    atomic.write_atomic(target, by_path[target], FILE_MODE)
                    written.append(target)
            except OSError as exc:
                result["changed"] = bool(written)
                result["written"] = written
                result["phases"] = dict(timer.phases)
                result["duration_s"] = timer.elapsed()
                raise FediflowError("writing %s failed: %s (%d of %d files written; the history is only updated "
                                    "after every report file)" % (target, exc.strerror or exc, len(written),
                                                                  len(changes)), result=result)
    result["phases"] = dict(timer.phases)
    result["duration_s"] = timer.elapsed()
    return result
