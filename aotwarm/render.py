"""Human output: rich tables for each command (the ``--json`` output is the raw dicts instead)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .targets import ALIASES, PROFILES


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def targets_table() -> Table:
    aliases = {}
    for a, k in ALIASES.items():
        aliases.setdefault(k, []).append(a)
    t = Table(title="GPU profiles")
    for col in ("target", "device name", "arch", "SMs", "smem/block (opt-in)", "memory", "aliases"):
        t.add_column(col)
    for key, p in PROFILES.items():
        t.add_row(key, p.name, p.sm_name, str(p.num_sms), f"{p.smem_optin // 1024} KiB",
                  f"{p.total_memory / 2**30:.0f} GiB", ", ".join(aliases.get(key, [])))
    return t


def plan_tables(plan) -> list:
    out = []
    fam = Table(title=f"Plan {plan.hash[:12]} — {plan.model['source']['model']} on {plan.target['key']} "
                      f"({plan.target['name']}), engine {plan.engine['name']} {plan.engine['version']}")
    for col in ("family", "status", "summary"):
        fam.add_column(col, overflow="fold")
    for f in plan.families:
        fam.add_row(f.family, f.status, f.summary)
    out.append(fam)
    gaps = [f"{f.family}: {u}" for f in plan.families for u in f.uncovered]
    if gaps:
        out.append(_list_table("Not covered by the bundle", "family: what and why", gaps))
    items = Table(title=f"{len(plan.items)} work items · {len(plan.probe.get('jit_keys', []))} JIT keys · "
                        f"{plan.probe.get('autotune_keys', 0)} autotune keys")
    for col in ("work item", "kernels (autotune configs)", "why"):
        items.add_column(col, overflow="fold")
    for i in plan.items:
        ks = ", ".join(f"{k}({'/'.join(str(e['configs']) for e in v) or 'jit'})" for k, v in i.kernels.items())
        items.add_row(i.id, ks, i.reason)
    out.append(items)
    cov = Table(title="Coverage")
    for col in ("kernel", "covers", "specialization classes enumerated"):
        cov.add_column(col, overflow="fold")
    for f in plan.families:
        for k in f.kernels:
            cov.add_row(k.kernel, k.covers, "\n".join(k.classes))
    out.append(cov)
    return out


def decisions_rows(decisions: dict) -> list[tuple[str, str]]:
    """What vLLM decided for the serving command (engines.vllm_resolve), as (setting, value) rows."""
    r = decisions["resolved"]
    rows = [
        ("vllm serve args", " ".join(decisions.get("argv", [])) or "(none: vLLM's defaults)"),
        ("parallel", f"tp {r['tensor_parallel_size']}, pp {r['pipeline_parallel_size']}, dp {r['data_parallel_size']}"
                     + (", expert parallel" if r["enable_expert_parallel"] else "")),
        ("dtype / max len", f"{r['dtype']} / {r['max_model_len']}"),
        ("batch", f"{r['max_num_batched_tokens']} tokens, {r['max_num_seqs']} sequences"),
        ("CUDA graphs", "none (--enforce-eager)" if r["enforce_eager"] else
         f"{r['cudagraph_mode']}, {len(r['cudagraph_capture_sizes'])} sizes up to {r['max_cudagraph_capture_size']}"),
        ("KV cache", f"block {r['block_size']}, dtype {r['kv_cache_dtype']}, layout {r['kv_cache_layout']}, "
                     f"prefix caching {'on' if r['enable_prefix_caching'] else 'off'}"),
        ("attention", ", ".join(r["attention_backends"]) or "-"),
    ]
    if r.get("mamba_page_size_padded") or r.get("mamba_cache_mode") not in (None, "none"):
        rows.append(("mamba cache", f"mode {r['mamba_cache_mode']}, block {r['mamba_block_size']}, "
                                    f"page padded to {r['mamba_page_size_padded']} B"))
    if r.get("num_speculative_tokens"):
        rows.append(("speculative", f"{r['speculative_method']}, {r['num_speculative_tokens']} tokens"))
    gdn = decisions.get("gdn")
    if gdn:
        ssm = gdn["state"]["ssm"]
        rows.append(("GDN layers", f"prefill {gdn['prefill_backend']}, decode {gdn['decode_kernel']}"
                                   + (", packed recurrent decode" if gdn["packed_recurrent_decode"] else "")
                                   + f"; states {gdn['conv_state_dtype']}/{gdn['ssm_state_dtype']}, "
                                   f"SSM state stride {ssm['stride'][0]} (page {gdn['page_bytes']} B)"))
    chosen = [m for m in decisions.get("layer_methods", [])
              if not m["method"].startswith("Unquantized") or "Experts" in m["layer"] or "MoE" in m["layer"]]
    if chosen:
        rows.append(("linear / MoE", "; ".join(f"{m['layer']}: {m['method']}"
                                                + (f" ({', '.join(m['chosen'])})" if m["chosen"] else "")
                                                + f" x{m['count']}" for m in chosen)))
    if decisions.get("vllm_env"):
        rows.append(("VLLM_* env", " ".join(f"{k}={v}" for k, v in decisions["vllm_env"].items())))
    return rows


def decisions_table(decisions: dict) -> Table:
    t = Table(title=f"vLLM {decisions['resolved']['vllm_version']} decided", show_header=False)
    t.add_column("setting", no_wrap=True)
    t.add_column("value", overflow="fold")
    for row in decisions_rows(decisions):
        t.add_row(*row)
    return t


def build_table(summary: dict, bundle: str | None) -> Table:
    """The build summary: one row per figure, so it reads at 80 columns."""
    s = summary
    t = Table(title=f"Build {'→ ' + bundle if bundle else '(no bundle written)'}", show_header=False)
    t.add_column("figure", no_wrap=True)
    t.add_column("value", overflow="fold")
    rows = [
        ("work items", f"{s['work_items']} ({s['failed_items']} failed, {s['resumed_items']} resumed from an "
                       f"earlier run)"),
        ("kernels", str(s["kernels"])),
        ("JIT keys planned", str(s["planned_jit_keys"])),
        ("this run", f"{s['compiled']} compiled, {s['cache_hits']} cache hits"),
        ("cache entries", f"{s['cache_entries']} in the bundle"),
        ("autotune keys", f"{s['autotune_keys']}: results shipped for {s['autotune_shipped']}, "
                          f"{s['autotune_left_to_node']} left to the node"),
        ("launchers", str(s["launchers"])),
        ("seconds", str(s["seconds"])),
    ]
    if s.get("deepgemm", "none") != "none":
        rows.insert(-1, ("DeepGEMM", f"{s['deepgemm']}, {s['deepgemm_kernels']} kernels"))
    if s.get("flashinfer", "none") != "none":
        rows.insert(-1, ("FlashInfer", f"{s['flashinfer']}, {s['flashinfer_modules']} modules"))
    for row in rows:
        t.add_row(*row)
    return t


def inspect_tables(manifest: dict, path: str) -> list:
    fp, tgt, eng = manifest["fingerprint"], manifest["target"], manifest["engine"]
    head = Table(title=f"Bundle {path}", show_header=False)
    head.add_column("field")
    head.add_column("value", overflow="fold")
    size = sum(f["size"] for f in manifest["files"])
    rows = [
        ("aotwarm", manifest["aotwarm_version"]),
        ("model", manifest["plan"]["model"]["source"]["model"]),
        ("target", f"{tgt['key']} ({tgt['name']}, sm{tgt['capability'][0]}{tgt['capability'][1]}, {tgt['num_sms']} SMs)"),
        ("engine", f"{eng['name']} {eng['version']} (sources {eng['source_sha256'][:12]})"
                   + "".join(f"; {k}: {', '.join(v)}" for k, v in manifest.get("engine_runtime", {}).items())),
        ("python", f"{fp['python_version']} ({fp['python_abi']})"),
        ("triton", f"{fp['triton_version']} (triton_key {fp['triton_key_sha256'][:12]})"),
        ("torch", fp["torch_version"]),
        ("key env vars", ", ".join(f"{k}={v}" for k, v in fp["key_env"].items()) or "none set"),
        ("plan", manifest["plan_hash"][:16]),
        ("files", f"{len(manifest['files'])} ({size / 2**20:.1f} MiB), {manifest['build']['cache_entries']} cache entries"),
        ("autotune results", _autotune_line(manifest["autotune"]["counts"])),
        ("launchers", f"{manifest['launchers']['count']} ({manifest['launchers']['python_abi']}) — {manifest['launchers']['note']}"),
    ]
    dg = manifest.get("deepgemm") or {}
    if dg.get("status", "none") != "none":
        rows.append(("DeepGEMM", _deepgemm_line(dg)))
    fi = manifest.get("flashinfer") or {}
    if fi.get("status", "none") != "none":
        rows.append(("FlashInfer", _flashinfer_line(fi)))
    decisions = manifest["plan"].get("serving", {}).get("vllm")
    if decisions:
        rows += [(f"vLLM: {k}", v) for k, v in decisions_rows(decisions)]
    for r in rows:
        head.add_row(*r)
    cov = Table(title="Coverage")
    for col in ("family", "status", "items", "summary"):
        cov.add_column(col, overflow="fold")
    for c in manifest["coverage"]:
        cov.add_row(c["family"], c["status"], str(c["work_items"]), c["summary"])
    out = [head, cov]
    gaps = [f"{c['family']}: {u}" for c in manifest["coverage"] for u in c["uncovered"]]
    if gaps:
        out.append(_list_table("Not covered by this bundle", "family: what and why", gaps))
    return out


def _deepgemm_line(dg: dict) -> str:
    if dg["status"] != "built":
        return f"{dg['status']}: {dg.get('reason', '')}"
    i = dg["identity"]
    return (f"{dg['entries']} kernels for {len(dg['items'])} shapes — DeepGEMM {i.get('version')} (headers "
            f"{str(i.get('include_sha256'))[:12]}), nvcc {i.get('nvcc')}, sm_{i.get('arch')}, {i.get('num_sms')} SMs")


def _flashinfer_line(fi: dict) -> str:
    if fi["status"] != "built":
        return f"{fi['status']}: {fi.get('reason', '')}"
    i, t = fi["identity"], fi["toolkit"]
    return (f"{', '.join(m['name'] for m in fi['modules'])} — FlashInfer {i.get('flashinfer_version')}, "
            f"{', '.join(i.get('cuda_architectures', []))}, nvcc {t['nvcc_release']} ({t['nvcc_from']}), CUDA runtime "
            f"{i.get('cuda_runtime')}; install puts the provider on PYTHONPATH")


def _autotune_line(c: dict) -> str:
    line = f"{c['measured']} measured, {c['reused']} reused, {c['pinned']} pinned, {c['node']} left to the node"
    if c["node"]:
        line += " (the node benchmarks those keys once; every config is compiled, so it never compiles)"
    return line


def verify_tables(report) -> list:
    out = []
    if report.preflight:
        t = Table(title="Preflight: this bundle cannot hit on this node")
        for col in ("field", "bundle", "node", "what to do"):
            t.add_column(col, overflow="fold")
        for m in report.preflight:
            t.add_row(m.field, m.bundle, m.node, m.hint)
        out.append(t)
        return out
    title = "PASSED: zero compiles" + (", zero autotune benchmarks" if report.expect_no_benchmarks else "") + \
        (", zero C compiler runs" if report.expect_no_c_builds else "")
    s = Table(title="Verify " + (title if report.passed else "FAILED"), show_header=False)
    s.add_column("figure", no_wrap=True)
    s.add_column("value", overflow="fold")
    unused = f"{len(report.unused_entries)} of {report.bundle_entries}"
    if report.node_autotune_results:
        unused += (f" ({report.node_autotune_results} autotune results were already on this node: those keys "
                   f"load only their winning config)")
    for row in (("work items", f"{report.items} ({len(report.failed_items)} failed)"),
                ("cache hits", str(report.hits)), ("compiles (misses)", str(len(report.misses))),
                ("autotune benchmarks", str(report.benchmarks)), ("C compiler runs", str(report.c_builds)),
                ("JIT keys outside the plan", str(len(report.unplanned_keys))),
                ("bundle entries unused", unused), ("seconds", str(report.seconds))):
        s.add_row(*row)
    out.append(s)
    dg = report.deepgemm
    if dg.get("status") == "not-built":
        out.append(_list_table("DeepGEMM: this bundle has no DeepGEMM kernels (built without a GPU of the target "
                               "kind); they compile on first use", "status", ["not-built"]))
    if dg.get("items"):
        d = Table(title="DeepGEMM replay (every planned M, nvcc replaced by a sentinel that fails any compile)")
        for col in ("shapes", "M values visited", "kernels installed", "new kernels", "compiler runs", "failed"):
            d.add_column(col, justify="right")
        d.add_row(*map(str, (dg["items"], dg.get("m_visited", 0), dg.get("cached_kernels", 0), dg["new_kernels"],
                             dg["compile_attempts"], len(dg["failed_items"]))))
        out.append(d)
        if dg["failed_items"]:
            out.append(_list_table("DeepGEMM items that failed (a kernel was missing: the sentinel refused to compile)",
                                   "item: error", dg["failed_items"]))
    fi = report.sections.get("flashinfer") or {}
    if fi.get("status") == "verified":
        out.append(_list_table(f"FlashInfer modules loaded with FLASHINFER_DISABLE_JIT=1 "
                               f"({len(fi['loaded'])} of {fi['modules']})", "module", fi["loaded"] or ["none"]))
        if fi["failed"]:
            out.append(_list_table("FlashInfer modules that did not load from the bundle (they would compile)",
                                   "module: error", fi["failed"]))
    if report.misses:
        m = Table(title="Misses")
        for col in ("work item", "kernel", "signature", "constexprs"):
            m.add_column(col, overflow="fold")
        for x in report.misses:
            m.add_row(x["item"], x["kernel"], x["signature"], x["constexprs"])
        out.append(m)
    if report.unplanned_keys:
        out.append(_list_table("JIT keys outside the plan: these compile on first use and need a writable cache",
                               "kernel | key", report.unplanned_keys))
    if report.failed_items:
        out.append(_list_table("Work items that failed to run", "item: error", report.failed_items))
    return out


def _list_table(title: str, column: str, rows: list[str]) -> Table:
    t = Table(title=title)
    t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(row)
    return t


def record_table(record: dict, summary, path: str) -> Table:
    """One row per figure of a record (``aotwarm record``)."""
    t = Table(title=f"Record → {path}", show_header=False)
    t.add_column("figure", no_wrap=True)
    t.add_column("value", overflow="fold")
    phases: dict[str, int] = {}
    for e in record["events"]:
        if e["ev"] == "triton_compile" and not e.get("cache_hit"):
            phases[e.get("phase", "run")] = phases.get(e.get("phase", "run"), 0) + 1
    ready = record.get("ready")
    rows = [
        ("command", " ".join(record["command"])[:300]),
        ("ended", f"{record['stopped_by']}, exit code {record['exit_code']}, "
                  f"{record['ended'] - record['started']:.1f} s"),
        ("engine ready", f"after {ready['at'] - record['started']:.1f} s" if ready else "no ready line seen"),
        ("processes", str(summary.processes)),
        ("Triton compiles", f"{summary.compiles} (" + ", ".join(f"{n} {p}" for p, n in sorted(phases.items()))
                            + f"), {summary.hits} disk hits" if summary.compiles else f"0, {summary.hits} disk hits"),
        ("autotune keys tuned", str(summary.autotune_tuned)),
        ("C compiler runs", str(summary.c_builds)),
        ("CuTe DSL compiles", str(summary.cute_compiles)),
        ("DeepGEMM / FlashInfer builds", f"{summary.deepgemm_new} / {summary.flashinfer_new}"),
        ("verdict", "zero compiles" if summary.zero_compiles else "compiled on this run"),
    ]
    if record.get("bundle"):
        rows.insert(1, ("against bundle", f"{record['bundle']['path']} in {record['bundle']['dir']}"))
    for row in rows:
        t.add_row(*row)
    return t


def diff_tables(report) -> list:
    head = Table(title=f"Diff: {report.recorded} recorded keys, {report.held} in the bundle, "
                       f"{len(report.missing)} missing", show_header=False)
    head.add_column("what", no_wrap=True)
    head.add_column("value", overflow="fold")
    if not report.missing:
        head.add_row("missing", "none: every recorded compile key is in the bundle")
    for m in report.missing:
        why = "; ".join(m.differences) if m.differences else (
            "no planned key for this kernel" if m.closest is None else "same specialization: options or environment differ")
        head.add_row(f"{m.kernel} ({'compiled' if m.compiled else 'loaded'}, {m.phase})", f"{m.entry[:16]}…: {why}")
    out = [head]
    if report.not_triton:
        out.append(_list_table("Built by the recorded command, not Triton (not held by a Triton bundle)", "what",
                               report.not_triton))
    return out