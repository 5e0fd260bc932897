"""Autotune results in the bundle, in Triton's own disk-cache format.

Triton's autotuner (with ``TRITON_CACHE_AUTOTUNING=1``) looks for
``<TRITON_CACHE_DIR>/<disk key>/<kernel>.autotune.json`` before benchmarking; the disk key is
recorded for every planned autotune key during the build (``device.AutotuneRecord``). Each result
carries a provenance:

* ``measured``: benchmarked by Triton itself on a GPU of the target kind (``build --tune``);
* ``reused``: taken from an earlier bundle (``--tuning-from``) for a key whose kernel source,
  config list and key values are unchanged (its ``identity``); the file is re-keyed for this
  environment;
* ``pinned``: ``--pin-autotune first`` — the engine's first listed config, chosen without
  measurement, only on request;
* ``node``: nothing shipped; the node benchmarks that key once (every config is compiled, so it
  never compiles).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class AutotuneResult:
    kernel: str
    key: list
    disk_key: str
    file_name: str
    identity: str
    provenance: str  # measured | reused | pinned | node
    content: bytes | None = None
    source: dict = field(default_factory=dict)  # where measured results came from

    def manifest_entry(self) -> dict:
        return {"kernel": self.kernel, "key": self.key, "disk_key": self.disk_key, "file": self.file_name,
                "identity": self.identity, "provenance": self.provenance, "source": self.source}


def unique_records(records: list[dict]) -> list[dict]:
    """One record per disk key (several work items reach the same autotune key)."""
    seen: dict[str, dict] = {}
    for r in records:
        if r.get("disk_key") and r["disk_key"] not in seen:
            seen[r["disk_key"]] = r
    return [seen[k] for k in sorted(seen)]


def pinned_content(record: dict) -> bytes:
    """A results file that makes Triton pick the first listed config (others never win)."""
    timings = [[cfg, [0.0, 0.0, 0.0] if i == 0 else [float("inf")] * 3] for i, cfg in enumerate(record["config_dicts"])]
    return json.dumps({"key": record["key"], "configs_timings": timings}, sort_keys=True).encode()


def rekey_content(content: bytes, record: dict) -> bytes:
    """Reused results keep their timings; the key written is this build's tuning key."""
    data = json.loads(content)
    return json.dumps({"key": record["key"], "configs_timings": data["configs_timings"]}, sort_keys=True).encode()


def assemble(records: list[dict], measured: dict[str, bytes], measured_source: dict,
             reusable: dict[str, tuple[bytes, dict]], pin: str | None) -> list[AutotuneResult]:
    out = []
    for r in unique_records(records):
        res = AutotuneResult(r["kernel"], r["key"], r["disk_key"], r["file_name"], r["identity"], "node")
        if r["disk_key"] in measured:
            res.provenance, res.content, res.source = "measured", measured[r["disk_key"]], measured_source
        elif r["identity"] in reusable:
            content, source = reusable[r["identity"]]
            res.provenance, res.content, res.source = "reused", rekey_content(content, r), source
        elif pin == "first":
            res.provenance, res.content = "pinned", pinned_content(r)
            res.source = {"rule": "first config in the engine's list, not measured"}
        out.append(res)
    return out


def reusable_from_bundle(path) -> dict[str, tuple[bytes, dict]]:
    """identity -> (results file, provenance) for every measured/reused result in another bundle."""
    from .bundle import read_bundle

    files: dict[str, bytes] = {}
    manifest = read_bundle(path, sink=lambda n, d: files.__setitem__(n, d) if n.endswith(".autotune.json") else None)
    out: dict[str, tuple[bytes, dict]] = {}
    for e in manifest.get("autotune", {}).get("results", []):
        name = f"triton/{e['disk_key']}/{e['file']}"
        if e["provenance"] in ("measured", "reused") and name in files:
            out[e["identity"]] = (files[name], {**e["source"], "from_bundle": manifest["plan_hash"][:16]})
    return out
