"""``build --from-record``: the recorded Triton keys as work items of a plan (optionally merged into another).

Every distinct recorded compile for the target's arch becomes one item (op ``record.triton_compile``)
that recompiles exactly that key GPU-less.  A record from another Python ABI, Triton build or engine
cannot give keys that hit here and is refused with the field that differs.  What a record shows but
Triton cannot rebuild (DeepGEMM and FlashInfer builds, CuTe DSL compiles, keys for another arch) is
stated in the family's ``uncovered`` list.
"""

from __future__ import annotations

from ..errors import Incompatible
from ..plan import FamilyCoverage, KernelCoverage, Plan, ServingArgs, WorkItem
from ..targets import ResolvedTarget

FAMILY = "recorded"
ITEM_FIELDS = ("kernel", "module", "qualname", "file", "fn_cache_key", "signature", "constants", "attrs", "options",
               "target", "hash")


def check_environment(record: dict) -> None:
    """Refuse (exit 3) a record whose keys cannot be rebuilt here, naming what differs."""
    from ..envinfo import fingerprint

    recorded = record["environment"]
    here = fingerprint().to_dict()
    for field, hint in (("python_abi", "record and build with the same Python minor"),
                        ("triton_version", "record and build with the same Triton wheel"),
                        ("triton_key_sha256", "record and build with the same Triton build")):
        if field in recorded and recorded[field] != here[field]:
            raise Incompatible(f"the record was made with {field} {recorded[field]!s:.16}, this builder has "
                               f"{here[field]!s:.16}: {hint}")
    engine = recorded.get("engine")
    if engine:
        from ..engines import detect_engine
        from ..errors import BadInput

        try:
            mine = detect_engine(engine["name"])
        except BadInput:
            raise Incompatible(f"the record was made with {engine['name']} {engine['version']}, which is not "
                               f"installed here: build where the recorded engine is")
        if (mine.version, mine.source_sha256) != (engine["version"], engine["source_sha256"]):
            raise Incompatible(f"the record was made with {engine['name']} {engine['version']} (sources "
                               f"{engine['source_sha256'][:12]}), this builder has {mine.version} (sources "
                               f"{mine.source_sha256[:12]}): kernel text and line numbers are in the keys")


def plan_from_record(record: dict, resolved: ResolvedTarget, base: Plan | None = None) -> Plan:
    check_environment(record)
    target = resolved.target
    compiles = [e for e in record["events"] if e["ev"] == "triton_compile"]
    items: dict[str, WorkItem] = {}
    kernels: dict[str, set[str]] = {}
    other_arch: set[str] = set()
    for event in compiles:
        if event.get("fn_cache_key") is None:
            continue
        if int((event.get("target") or {}).get("arch") or -1) != target.arch:
            other_arch.add(f"{event['kernel']} (sm{(event.get('target') or {}).get('arch')})")
            continue
        item_id = f"record/{event['kernel']}/{event['hash'][:16]}"
        if item_id in items:
            continue
        phase = event.get("phase", "run")
        items[item_id] = WorkItem(item_id, FAMILY, "record.triton_compile",
                                  {k: event.get(k) for k in ITEM_FIELDS},
                                  f"recorded {'compiling' if not event.get('cache_hit') else 'loading'} in process "
                                  f"{event.get('pid')} ({phase})")
        kernels.setdefault(event["kernel"], set()).add(event["hash"])
    uncovered = [f"compiled for another arch than {target.key}'s, not rebuilt: {k}" for k in sorted(other_arch)]
    caches = record.get("caches", {})
    for name, what in (("deepgemm", "DeepGEMM kernels"), ("flashinfer", "FlashInfer JIT modules")):
        new = caches.get(name, {}).get("new", [])
        if new:
            uncovered.append(f"{len(new)} {what} built by the recorded command (not Triton: not rebuilt from a "
                             f"record; see the deepgemm family)")
    cute = [e["kernel"] for e in record["events"] if e["ev"] == "cute_compile"]
    if cute:
        uncovered.append(f"{len(cute)} CuTe DSL compiles (in-memory, every process): {', '.join(sorted(set(cute)))}")
    command = " ".join(record["command"])
    family = FamilyCoverage(FAMILY, "planned" if items else "not-applicable",
                            f"{len(items)} Triton keys of {len(kernels)} kernels recorded from `{command[:200]}`",
                            [KernelCoverage(k, "as recorded", [f"{len(h)} key(s)"]) for k, h in sorted(kernels.items())],
                            uncovered)
    recorded_keys = {f"{e['kernel']}|{e['jit_key']}" for e in compiles if e.get("jit_key")}
    if base is None:
        from ..engines import detect_engine

        engine = detect_engine("auto").to_dict()
        return Plan(model={"source": {"model": f"record of {command[:200]}", "kind": "record", "path": "",
                                      "sha256": "", "note": ""}, "spec": {}},
                    target=target.to_dict(), target_requested=resolved.requested, engine=engine,
                    serving=ServingArgs(engine=engine["name"], families=(FAMILY,)).to_dict(), families=[family],
                    items=list(items.values()), probe={"jit_keys": sorted(recorded_keys), "autotune_keys": 0})
    if base.target["key"] != target.key:
        from ..errors import BadInput

        raise BadInput(f"--plan is for {base.target['key']}, --gpu asks for {target.key}: give the plan's target")
    merged = [i for i in base.items if i.id not in items] + list(items.values())
    probe = dict(base.probe)
    probe["jit_keys"] = sorted(set(base.probe.get("jit_keys", [])) | recorded_keys)
    return Plan(model=base.model, target=base.target, target_requested=base.target_requested, engine=base.engine,
                serving=base.serving, families=[f for f in base.families if f.family != FAMILY] + [family],
                items=merged, probe=probe, sm_count_sensitive=base.sm_count_sensitive)
