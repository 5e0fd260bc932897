"""The ``aotwarm`` command line: parse, call one function per command, render. Nothing else."""

from __future__ import annotations

import functools
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import click

from . import __version__
from .errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, AotwarmError


def _emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=1, sort_keys=True, default=str))


def handle_errors(fn):
    """One line on stderr and the documented exit code for every expected failure."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AotwarmError as err:
            report = getattr(err, "report", None)
            if report is not None and kwargs.get("as_json"):
                _emit_json({"error": str(err), **report.to_dict()})
            elif report is not None:
                from .render import console, verify_tables

                for t in verify_tables(report):
                    console(stderr=True).print(t)
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted; a re-run resumes where this one stopped", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aotwarm")
def main() -> None:
    """Plan, compile and ship the Triton kernel caches an LLM serving engine would JIT at start-up.

    Exit codes: 0 ok · 1 verification found misses or a build is incomplete · 2 bad input or usage ·
    3 this environment cannot use this bundle.
    """


def serving_options(fn):
    """Options of plan/build.  For the vLLM engine the serving settings are the ``vllm serve`` arguments
    after ``--``; the serving flags here are shortcuts for them (see ``serving.VLLM_ALIASES``)."""
    opts = [
        click.option("--gpu", "gpu", required=False, help="GPU profile or arch alias (see `aotwarm targets`)."),
        click.option("--engine", default="auto", show_default=True, help="Engine whose kernels to plan: auto (vLLM when installed, else fla), vllm, fla."),
        click.option("--tp", type=click.IntRange(1), help="Tensor-parallel size (vLLM: --tensor-parallel-size; fla default 1)."),
        click.option("--dtype", type=click.Choice(["bfloat16", "float16"]), help="Activation dtype (default: the model's)."),
        click.option("--max-num-batched-tokens", type=click.IntRange(1),
                     help="Largest number of tokens in one forward pass (default: vLLM's own; fla 8192)."),
        click.option("--max-num-seqs", type=click.IntRange(1),
                     help="Largest decode batch / number of packed sequences (default: vLLM's own; fla 256)."),
        click.option("--max-prefill-batch", type=click.IntRange(1, 64),
                     help="fla: largest padded prefill batch (transformers generate() with several prompts; default 1)."),
        click.option("--family", "families", multiple=True, default=("all",), show_default=True,
                     help="Kernel families to plan (repeatable): all, gdn, fused-moe, mxfp4-moe, moe-lora, moe-wna16, shared-expert-gate, deepgemm, flashinfer, engine-layers, vllm-runtime."),
        click.option("--num-sms", type=click.IntRange(1), help="Plan for a reduced SM count."),
        click.option("--request-features", default="all", show_default=True,
                     help="vllm-runtime: the per-request sampling features whose kernels are planned (comma-separated: "
                          "temperature, top_k, top_p, seed, min_p, penalties, logit_bias, min_tokens, "
                          "allowed_token_ids, logprobs, prompt_logprobs, bad_words, structured_output; or none). "
                          "A request using another feature compiles its kernels on first use (said by inspect)."),
        click.option("--mamba-ssm-cache-dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
                     help="vLLM --mamba-ssm-cache-dtype."),
        click.option("--mamba-cache-dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
                     help="vLLM --mamba-cache-dtype."),
        click.option("--num-speculative-tokens", type=click.IntRange(0, 16),
                     help="vLLM: --speculative-config with MTP and this many tokens."),
        click.option("--max-cudagraph-capture-size", type=click.IntRange(1), help="vLLM --max-cudagraph-capture-size."),
        click.option("--enforce-eager", is_flag=True, default=None, help="vLLM --enforce-eager."),
        click.option("--gdn-prefill-backend", type=click.Choice(["auto", "triton", "flashinfer"]),
                     help="vLLM --gdn-prefill-backend."),
        click.option("--ep", type=click.IntRange(1),
                     help="vLLM: --enable-expert-parallel over this many ranks (the tensor-parallel size)."),
        click.option("--moe-backend", help="vLLM --moe-backend (triton, deep_gemm, ...)."),
        click.option("--deep-gemm-e8m0/--no-deep-gemm-e8m0", "deep_gemm_e8m0", default=True, show_default=True,
                     help="vLLM: VLLM_USE_DEEP_GEMM_E8M0 on the serving nodes (UE8M0 scales for DeepGEMM)."),
        click.option("--weights", default="auto", show_default=True, type=click.Choice(["auto", "off"]),
                     help="Read the checkpoint's safetensors headers (local model directory, or the hub's headers "
                          "when it answers): vLLM's weight loaders check every shape against the model it builds; "
                          "FP8 block models: projections kept unquantized are found."),
        click.option("-j", "--jobs", default=os.cpu_count() or 1, show_default=True, type=click.IntRange(1),
                     help="Worker processes."),
        click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _make_plan(model: str, opts: dict, quiet: bool):
    from . import serving as serving_mod
    from .engines import detect_engine
    from .errors import BadInput
    from .model import load_model
    from .planners import families_for, make_plan
    from .probe import probe_plan
    from .render import console, decisions_table
    from .targets import resolve_target

    gpu, num_sms, jobs = opts["gpu"], opts["num_sms"], opts["jobs"]
    if not gpu:
        raise BadInput("--gpu is required: a GPU profile or an arch alias such as sm90 (see `aotwarm targets`)")
    resolved = resolve_target(gpu, num_sms)
    spec, source = load_model(model)
    from .checkpoint import aggregate, read_tensors
    from .planners.deepgemm import fp8_block_shape

    eng = detect_engine(opts["engine"])
    fp8_block = fp8_block_shape(spec) is not None
    tensors, where = (read_tensors(source, opts["weights"]) if eng.name == "vllm" or fp8_block
                      else ({}, ""))
    if fp8_block and opts["weights"] != "off" and source.kind in ("directory", "hub"):
        spec = dataclasses.replace(spec, weights={"source": where, "projections": aggregate(tensors) if tensors else {}})
    families = families_for(opts["families"], eng.name)
    err = console(stderr=True)
    if not quiet:
        if source.note:
            err.print(f"[yellow]note:[/] {source.note}")
        err.print(f"target: {resolved.describe()}")
        err.print(f"engine: {eng.name} {eng.version} ({eng.location})")
    if eng.name == "vllm":
        from .engines.vllm_resolve import resolve_for_source

        argv = serving_mod.vllm_argv(opts, opts["vllm_args"])
        with err.status(f"resolving the serving config with vLLM's own code (vllm serve {' '.join(argv)})…"):
            # with headers, vLLM's own weight loaders check the checkpoint against the model it builds
            checkpoint = {"source": where, "tensors": tensors} if tensors else None
            decisions = resolve_for_source(source, argv, resolved.target, checkpoint=checkpoint)
        serving = serving_mod.for_vllm(decisions, families, opts)
        if not quiet:
            err.print(decisions_table(decisions))
    else:
        serving = serving_mod.for_fla(families, opts, opts["vllm_args"])
    plan = make_plan(spec, source, resolved, serving, eng)
    if not quiet:
        with err.status(f"probing {len(plan.items)} work items through {eng.name} under a virtual {resolved.target.key}…"):
            probe_plan(plan, jobs=jobs)
    else:
        probe_plan(plan, jobs=jobs)
    return plan


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def targets(as_json: bool) -> None:
    """List the GPU profiles and arch aliases."""
    from .render import console, targets_table
    from .targets import ALIASES, PROFILES

    if as_json:
        _emit_json({"profiles": {k: p.to_dict() for k, p in PROFILES.items()}, "aliases": ALIASES})
        return
    console().print(targets_table())


@main.command()
@click.argument("model")
@serving_options
@click.option("--audit", type=click.IntRange(0), default=0, help="Also probe N random in-range shapes and report keys outside the plan.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the plan (JSON lock file).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def plan(model, audit, output, as_json, **opts) -> None:
    """Plan every autotune key and JIT specialization MODEL's kernels hit on a target GPU."""
    from .probe import audit_plan
    from .render import console, plan_tables

    p = _make_plan(model, opts, as_json)
    report = audit_plan(p, audit, jobs=opts["jobs"]) if audit else None
    if output:
        p.write(output)
    if as_json:
        d = json.loads(p.to_json())
        if report:
            d["audit"] = report.__dict__
        _emit_json(d)
    else:
        for t in plan_tables(p):
            console().print(t)
        if output:
            console().print(f"plan written to {output} (hash {p.hash[:16]})")
        if report:
            verdict = "[green]complete[/]" if not report.outside and not report.failures else "[red]INCOMPLETE[/]"
            console().print(f"audit: {report.samples} random in-range shapes, {len(report.outside)} JIT key(s) outside "
                            f"the plan, {len(report.failures)} failure(s): {verdict}")
            for line in report.outside + report.failures:
                console().print(f"  {line}")
    if report and (report.outside or report.failures):
        sys.exit(EXIT_FAILED)


def _default_output(model: str, target: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).stem if model.endswith(".json") else model.split("/")[-1])
    return Path("caches") / f"{slug.lower()}.{target}.tar.zst"


@main.command()
@click.argument("model", required=False)
@serving_options
@click.option("--plan", "plan_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Build a plan written by `aotwarm plan -o` instead of planning MODEL.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle path (default: caches/<model>.<target>.tar.zst).")
@click.option("--keep-going", is_flag=True, help="Finish the other items when one fails; bundle what was built.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), help="Where compiled kernels are kept between runs.")
@click.option("--item-timeout", default=1800, show_default=True, type=click.IntRange(1), help="Seconds allowed per work item.")
@click.option("--launchers/--no-launchers", default=True, show_default=True,
              help="Prebuild Triton's host launchers so the node needs no C compiler.")
@click.option("--tune", is_flag=True, help="Measure autotune results here (needs a GPU of the target kind).")
@click.option("--tuning-from", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Reuse measured autotune results from an earlier bundle where kernel, configs and key are unchanged.")
@click.option("--pin-autotune", type=click.Choice(["first"]),
              help="Ship unmeasured results that pin the engine's first config (recorded as pinned).")
@click.option("--add", "add_deepgemm", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Take the parts built elsewhere from this bundle (same plan): DeepGEMM kernels and FlashInfer's "
                   "TRT-LLM cubins from a GPU node, FlashInfer modules from a GPU-less build.")
@click.option("--from-record", "record_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Compile exactly the Triton keys an `aotwarm record` saw (with --gpu; merged into --plan if given).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def build(model, plan_file, output, keep_going, work_dir, item_timeout, launchers, tune, tuning_from, pin_autotune,
          add_deepgemm, record_file, as_json, **opts) -> None:
    """Compile every planned kernel in child processes and write a bundle.

    Triton kernels need no GPU.  DeepGEMM kernels (FP8 block models) need a GPU of the target kind:
    without one the bundle is written with the Triton part and the exit code is 4."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import build as build_mod
    from .errors import BadInput, BuildIncomplete
    from .plan import Plan
    from .render import build_table, console

    import signal

    def _interrupt(signum, frame):  # SIGTERM stops the workers like Ctrl-C does; a re-run resumes
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C too, even where the build was started with SIGINT ignored (inherited from a parent process)
    signal.signal(signal.SIGINT, _interrupt)
    if plan_file and model:
        raise BadInput("give either MODEL or --plan, not both")
    if record_file:
        from .record.fold import plan_from_record
        from .record.recordfile import read_record
        from .targets import resolve_target

        if model:
            raise BadInput("--from-record builds the recorded keys (and --plan's items): give no MODEL")
        if not opts["gpu"]:
            raise BadInput("--from-record needs --gpu: the target the recorded keys are rebuilt for")
        p = plan_from_record(read_record(record_file), resolve_target(opts["gpu"], opts["num_sms"]),
                             Plan.read(plan_file) if plan_file else None)
        output = output or Path("caches") / f"record.{p.target['key']}.tar.zst"
    elif plan_file:
        p = Plan.read(plan_file)
    elif model:
        p = _make_plan(model, opts, as_json)
    else:
        raise BadInput("give a MODEL (repo id, directory or config.json) or --plan plan.json")
    if not p.items:
        raise BadInput("the plan has no work items (see `aotwarm plan`): nothing to build")
    output = output or _default_output(p.model["source"]["model"], p.target["key"])
    err = console(stderr=True)
    progress = Progress(TextColumn("compiling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err, disable=as_json)
    failure = None
    with progress:
        task = progress.add_task("", total=len(p.triton_items))

        def tick(outcome) -> None:
            progress.update(task, advance=1, description=outcome.id + ("" if outcome.ok else " [red]FAILED[/]"))
            if not outcome.ok and not as_json:
                err.print(f"[red]failed[/] {outcome.id}: {outcome.error}")

        try:
            options = build_mod.BuildOptions(launchers=launchers, tune=tune, tuning_from=tuning_from,
                                             pin_autotune=pin_autotune, add_deepgemm=add_deepgemm)
            result = build_mod.build(p, output, jobs=opts["jobs"], keep_going=keep_going, work_dir=work_dir,
                                     item_timeout=item_timeout, on_result=tick, options=options,
                                     on_phase=lambda what: progress.update(task, description=what))
        except BuildIncomplete as e:
            failure = e
            result = getattr(e, "result", None)
    if failure and result is None:
        raise failure
    summary = result.summary()
    if as_json:
        _emit_json({"bundle": str(result.bundle) if result.bundle else None, "plan_hash": p.hash, "summary": summary,
                    "failed": [o.__dict__ for o in result.failed]})
    else:
        console().print(build_table(summary, str(result.bundle) if result.bundle else None))
        for fam in (result.manifest or {}).get("coverage", []):
            details = [line for line in fam["uncovered"] if line.startswith("  ")]  # per-file lines under a heading
            for line in fam["uncovered"]:
                if not line.startswith("  ") or not result.bundle:
                    console().print(f"[yellow]not covered[/] ({fam['family']}): {line}")
            if details and result.bundle:
                console().print(f"  ({len(details)} per-file lines: aotwarm inspect {result.bundle})")
        if result.manifest:
            counts = result.manifest["autotune"]["counts"]
            console().print(f"autotune results: {counts['measured']} measured, {counts['reused']} reused, "
                            f"{counts['pinned']} pinned, {counts['node']} left to the node"
                            + (f" (--tuning-from had no match for {counts['node']})" if tuning_from and counts["node"] else ""))
            console().print(f"launchers: {result.manifest['launchers']['count']} — {result.manifest['launchers']['note']}")
            dg = result.deepgemm
            if dg["status"] != "none":
                console().print(f"DeepGEMM: {dg['status']}" + (f", {dg.get('entries', 0)} kernels" if dg["status"] == "built"
                                                                 else f" — {dg.get('reason', '')}"))
            fi = result.flashinfer
            if fi["status"] != "none":
                console().print(f"FlashInfer: {fi['status']}" + (
                    f", {len(fi['modules'])} module(s) ({', '.join(m['name'] for m in fi['modules'])}), nvcc "
                    f"{fi['toolkit']['nvcc_release']} from {fi['toolkit']['nvcc_from']}" if fi["status"] == "built"
                    else f" — {fi.get('reason', '')}"))
                nested = fi.get("trtllm_dg") or {}
                if nested.get("status", "none") != "none":
                    console().print(f"FlashInfer TRT-LLM DeepGEMM cubins: {nested['status']}" + (
                        f", {nested.get('cubins', 0)}" if nested["status"] == "built" else f" — {nested.get('reason', '')}"))
    if failure:
        raise failure
    sys.exit(EXIT_PARTIAL if result.not_built else EXIT_OK)


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the manifest).")
@handle_errors
def inspect(bundle: Path, as_json: bool) -> None:
    """Check a bundle's integrity and show what it holds and covers."""
    from .bundle import read_manifest
    from .render import console, inspect_tables

    manifest = read_manifest(bundle)
    if as_json:
        _emit_json(manifest)
        return
    for t in inspect_tables(manifest, str(bundle)):
        console().print(t)


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dir", "dest", required=True, type=click.Path(file_okay=False, path_type=Path), help="Install directory.")
@click.option("--print-env", is_flag=True, help="Print the environment the engine needs, as shell exports.")
@click.option("--force", is_flag=True, help="Install even if this environment's Python/Triton/engine/env differ.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def install(bundle: Path, dest: Path, print_env: bool, force: bool, as_json: bool) -> None:
    """Verify and install a bundle into DIR (atomic per cache entry; relocates Triton's group files)."""
    from .install import install as do_install
    from .render import console

    res = do_install(bundle, dest, force=force)
    env = res.env()
    if as_json:
        _emit_json({"dest": str(res.dest), "triton_cache": str(res.triton_cache), "entries_added": res.entries_added,
                    "entries_present": res.entries_present, "files": res.files, "bundle_sha256": res.bundle_sha256,
                    "env": env, "notes": res.notes})
        return
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
    if print_env:
        for k, v in env.items():
            # PYTHONPATH (FlashInfer's provider) goes in front of whatever the engine already has
            click.echo(f"export {k}={v}" + ("${PYTHONPATH:+:$PYTHONPATH}" if k == "PYTHONPATH" else ""))
        return
    console().print(f"installed {res.files} files: {res.entries_added} cache entries added, "
                    f"{res.entries_present} already present, in {res.triton_cache}")
    console().print("the engine needs: " + " ".join(f"{k}={v}" for k, v in env.items())
                    + (" (PYTHONPATH: in front of any the engine has)" if "PYTHONPATH" in env else ""))


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dir", "dest", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the bundle was installed.")
@click.option("--item-timeout", default=1800, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def verify(bundle: Path, dest: Path, item_timeout: int, as_json: bool) -> None:
    """On a GPU node: preflight, then replay the plan on the GPU; exit 0 only with zero compiles."""
    from .render import console, verify_tables
    from .verify import verify as do_verify

    report = do_verify(bundle, dest, timeout=item_timeout)
    if as_json:
        _emit_json(report.to_dict())
    else:
        for t in verify_tables(report):
            console().print(t)
    sys.exit(EXIT_OK if report.passed else EXIT_FAILED)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The record (JSON).")
@click.option("--bundle", "bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run against this bundle, installed in --dir (its environment is set for the command).")
@click.option("--dir", "dest", type=click.Path(file_okay=False, path_type=Path), help="Where --bundle is installed.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Stop the command (SIGTERM to its process group) after this many seconds.")
@click.option("--ready-pattern", default=None,
              help="Regular expression of the output line that means the engine is ready (default: vLLM's).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (the command's output still passes through).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@handle_errors
def record(output, bundle, dest, duration, ready_pattern, as_json, command) -> None:
    """Run COMMAND and record every JIT compile of every Python process it starts (exit 0: zero compiles)."""
    from .errors import BadInput
    from .record import run as record_run
    from .record.recordfile import summarize
    from .render import console, record_table

    env: dict = {}
    bundle_info = None
    if bundle or dest:
        if not (bundle and dest):
            raise BadInput("--bundle and --dir go together: the bundle, and where it is installed")
        from .bundle import read_manifest
        from .install import engine_env, require_installed

        manifest = read_manifest(bundle)
        require_installed(bundle, dest)
        env = engine_env(dest, manifest)
        bundle_info = {"path": str(bundle), "dir": str(dest), "plan_hash": manifest["plan_hash"]}
    rec = record_run.run(list(command), output, env, duration, ready_pattern or record_run.READY, bundle_info)
    summary = summarize(rec)
    if as_json:
        _emit_json({"record": str(output), "summary": {**summary.__dict__, "zero_compiles": summary.zero_compiles},
                    "exit_code": rec["exit_code"], "stopped_by": rec["stopped_by"]})
    else:
        console(stderr=True).print(record_table(rec, summary, str(output)))
    sys.exit(EXIT_OK if summary.zero_compiles else EXIT_FAILED)


@main.command()
@click.argument("record_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def diff(record_file, bundle, as_json) -> None:
    """What a record compiled that BUNDLE does not hold, with the closest planned key (exit 0: nothing)."""
    from .bundle import read_manifest
    from .record.diff import diff as do_diff
    from .record.recordfile import read_record
    from .render import console, diff_tables

    report = do_diff(read_record(record_file), read_manifest(bundle))
    if as_json:
        _emit_json(report.to_dict())
    else:
        for t in diff_tables(report):
            console().print(t)
    sys.exit(EXIT_OK if not report.missing else EXIT_FAILED)
