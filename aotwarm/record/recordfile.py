"""The record file: what a recorded command JIT-compiled, process by process, and how it ended.

One JSON document (``FORMAT``), written atomically::

    {"format", "aotwarm_version", "command", "started", "ended", "exit_code", "stopped_by",
     "ready": {"at", "line"} | null, "environment": {...}, "bundle": {...} | null,
     "processes": [{"pid", "ppid", "argv", "python"}], "events": [...], "caches": {...}}

Each event has ``ev`` (``triton_compile``, ``autotune``, ``autotune_bench``, ``c_build``,
``cute_compile``, ``record_error``), ``t``, ``pid`` and ``phase`` (``warmup`` before the engine said it
was ready, ``serving`` after, ``run`` when no ready line was seen).  ``read_record`` refuses anything
else with one line: records are input to ``build --from-record`` and must not be trusted blindly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput

FORMAT = "aotwarm-record/1"
MAX_BYTES = 512 << 20
EVENT_KINDS = {"triton_compile", "autotune", "autotune_bench", "c_build", "cute_compile", "record_error"}


@dataclass
class Summary:
    """The counts a record comes down to."""

    processes: int
    compiles: int  # Triton compiles that missed the disk cache
    hits: int
    autotune_tuned: int  # autotune keys benchmarked (not answered from a cache)
    c_builds: int
    cute_compiles: int
    deepgemm_new: int
    flashinfer_new: int

    @property
    def zero_compiles(self) -> bool:
        return not (self.compiles or self.autotune_tuned or self.c_builds or self.cute_compiles
                    or self.deepgemm_new or self.flashinfer_new)


def summarize(record: dict) -> Summary:
    events = record["events"]
    kinds = [e["ev"] for e in events]
    caches = record.get("caches", {})
    return Summary(
        processes=len(record.get("processes", [])),
        compiles=sum(1 for e in events if e["ev"] == "triton_compile" and not e.get("cache_hit")),
        hits=sum(1 for e in events if e["ev"] == "triton_compile" and e.get("cache_hit")),
        autotune_tuned=(sum(1 for e in events if e["ev"] == "autotune" and not e.get("cache_hit"))
                        + kinds.count("autotune_bench")),
        c_builds=kinds.count("c_build"), cute_compiles=kinds.count("cute_compile"),
        deepgemm_new=len(caches.get("deepgemm", {}).get("new", [])),
        flashinfer_new=len(caches.get("flashinfer", {}).get("new", [])))


def write_record(path: Path, record: dict) -> None:
    from ..fsutil import atomic_write_text

    atomic_write_text(Path(path), json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")


def read_record(path: Path) -> dict:
    """The record at ``path``, validated; BadInput (one line) for anything that is not one."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise BadInput(f"{path} is {size >> 20} MiB: not an aotwarm record (at most {MAX_BYTES >> 20} MiB)")
        data = json.loads(path.read_text())
    except OSError as err:
        raise BadInput(f"cannot read record {path}: {err.strerror}")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path} is not an aotwarm record (not JSON: {err}): record it again with `aotwarm record`")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(f"{path} is not an aotwarm record (format {data.get('format') if isinstance(data, dict) else None!r}, "
                       f"expected {FORMAT!r}): record it again with this aotwarm")
    for field, kind in (("events", list), ("processes", list), ("environment", dict), ("command", list)):
        if not isinstance(data.get(field), kind):
            raise BadInput(f"{path} is not a valid aotwarm record: {field!r} is missing or not a {kind.__name__}")
    for i, event in enumerate(data["events"]):
        if not isinstance(event, dict) or event.get("ev") not in EVENT_KINDS:
            raise BadInput(f"{path} is not a valid aotwarm record: event {i} is not one of {sorted(EVENT_KINDS)}")
        if event["ev"] == "triton_compile":
            _check_compile(path, i, event)
    return data


def _check_compile(path: Path, i: int, event: dict) -> None:
    """The fields a recompile reads must have the types it expects (anything else is refused)."""
    def bad(why: str) -> BadInput:
        return BadInput(f"{path} is not a valid aotwarm record: compile event {i} {why}")

    for field in ("kernel", "hash", "entry"):
        if not isinstance(event.get(field), str):
            raise bad(f"has no {field}")
    if not all(c.isalnum() for c in event["entry"]) or not all(c in "0123456789abcdef" for c in event["hash"]):
        raise bad("has a malformed cache entry or hash")
    for field in ("signature", "constants", "attrs"):
        value = event.get(field, [])
        if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2 for p in value):
            raise bad(f"has a malformed {field}")
    if not isinstance(event.get("options", {}), dict):
        raise bad("has malformed options")
