"""The FlashInfer part of a bundle on a GPU node, through vLLM's own FlashInfer call sites.

    python -m tests.gpu.flashinfer_on_node BUNDLE PLAN OUT_JSON

1. installs BUNDLE (a FlashInfer-only bundle built GPU-less elsewhere) into a fresh directory;
2. ``kinds.flashinfer.verify_section``: every planned module through FlashInfer's own loader with
   ``FLASHINFER_DISABLE_JIT=1``;
3. a child with the install's environment and ``FLASHINFER_DISABLE_JIT=1`` (a module build would raise):
   vLLM's ``flashinfer_sample`` -- what its sampler calls -- at 30 random batch compositions (top-k, top-p,
   both; batch 1..256; vocabulary of the plan's model), samples checked against the top-k set; then vLLM's
   ``flashinfer_fp8_blockscale_gemm`` for each FP8 linear shape of the plan at M = 1..31 (the M < 32 branch of
   vLLM's FP8 block kernel), checked against a dequantized matmul, counting the TRT-LLM DeepGEMM cubins the
   module compiles (``$TRTLLM_DG_CACHE_DIR``) on a first and a second pass;
4. the same sampling and FP8 calls in children *without* the bundle and with JIT allowed (fresh FlashInfer
   workspace): the first-call time FlashInfer's own JIT costs on this node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(code: str, env: dict, timeout: float = 1500) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "rc": proc.returncode, "stderr": proc.stderr[-3000:]}
    return json.loads(lines[-1])


SAMPLE = r'''
import json, os, random, time, torch
from vllm.v1.sample.ops.topk_topp_sampler import flashinfer_sample
random.seed(0); torch.manual_seed(0)
vocab = VOCAB
out = {"calls": 0, "bad": 0, "first_call_s": None, "kinds": {}}
t0 = time.monotonic()
for i in range(30):
    b = random.randint(1, 256)
    kind = random.choice(["top-k", "top-p", "top-k+top-p"])
    logits = torch.randn(b, vocab, device="cuda", dtype=torch.float32) * 3
    k = torch.randint(1, 64, (b,), device="cuda", dtype=torch.int32) if "top-k" in kind else None
    p = (torch.rand(b, device="cuda") * 0.5 + 0.4) if "top-p" in kind else None
    s = time.monotonic()
    ids = flashinfer_sample(logits, k, p)
    torch.cuda.synchronize()
    if out["first_call_s"] is None:
        out["first_call_s"] = round(time.monotonic() - s, 3)
    if k is not None:
        top = logits.topk(64, dim=-1).indices
        rank = (top == ids.view(-1, 1)).float().argmax(dim=-1)
        ok = ((top == ids.view(-1, 1)).any(dim=-1)) & (rank < k)
        out["bad"] += int((~ok).sum())
    out["calls"] += 1
    out["kinds"][kind] = out["kinds"].get(kind, 0) + 1
out["seconds"] = round(time.monotonic() - t0, 2)
out["ok"] = True
print(json.dumps(out))
'''

FP8 = r'''
import json, os, time, torch
from vllm.utils.flashinfer import flashinfer_fp8_blockscale_gemm
shapes = SHAPES
cache = os.environ["TRTLLM_DG_CACHE_DIR"]
def cubins():
    return sorted(str(p.relative_to(cache)) for p in __import__("pathlib").Path(cache).rglob("*.cubin"))
out = {"passes": [], "ok": True}
torch.manual_seed(0)
weights = {}
for n, k in shapes:
    w = (torch.randn(n, k, device="cuda") * 0.1).to(torch.float8_e4m3fn)
    s = torch.rand(n // 128, k // 128, device="cuda", dtype=torch.float32) + 0.5
    weights[(n, k)] = (w, s)
for pas in range(2):
    before = set(cubins()); t0 = time.monotonic(); worst = 0.0; calls = 0
    for (n, k), (w, s) in weights.items():
        ref_w = (w.float().view(n // 128, 128, k // 128, 128) * s.view(n // 128, 1, k // 128, 1)).view(n, k)
        for m in range(1, 32):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            y = flashinfer_fp8_blockscale_gemm(input=x, weight=w, weight_scale=s, out_dtype=torch.bfloat16)
            calls += 1
            ref = x.float() @ ref_w.t()
            worst = max(worst, float(((y.float() - ref).norm() / ref.norm()).item()))
    torch.cuda.synchronize()
    new = sorted(set(cubins()) - before)
    out["passes"].append({"calls": calls, "seconds": round(time.monotonic() - t0, 2), "new_cubins": len(new),
                          "examples": new[:3], "worst_rel_err": round(worst, 4)})
print(json.dumps(out))
'''


def main(bundle: str, plan_path: str, out_path: str) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from aotwarm.bundle import read_bundle
    from aotwarm.install import cache_dir, install
    from aotwarm.kinds import flashinfer as fi_kind
    from aotwarm.plan import Plan
    from aotwarm.preflight import preflight

    import torch

    plan = Plan.read(Path(plan_path))
    manifest = read_bundle(Path(bundle))
    gpu = {"name": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
           "num_sms": torch.cuda.get_device_properties(0).multi_processor_count}
    report: dict = {"gpu": gpu, "torch": torch.__version__, "python": sys.version.split()[0],
                    "preflight": [m.line() for m in preflight(manifest, gpu)]}
    tmp = Path(tempfile.mkdtemp(prefix="aotwarm-fi-node-"))
    dest = tmp / "node" / "dir"
    res = install(Path(bundle), dest, force=True)  # preflight above says what differs (the carried engine files)
    env = {**os.environ, **res.env(), "FLASHINFER_WORKSPACE_BASE": str(tmp / "fi-ws-bundle")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (res.env()["PYTHONPATH"], os.environ.get("PYTHONPATH")) if p)
    report["install"] = {"files": res.files, "env": res.env()}
    t = time.monotonic()
    report["verify_section"] = fi_kind.verify_section(plan, manifest, cache_dir(dest), timeout=900)
    report["verify_section"]["seconds"] = round(time.monotonic() - t, 2)
    stand_in = None
    if shutil.which("ninja") is None:  # vLLM's has_flashinfer() wants ninja on PATH (never run: JIT is disabled)
        stand_in = tmp / "bin"
        stand_in.mkdir()
        (stand_in / "ninja").write_text("#!/bin/sh\necho 'ninja stand-in: JIT must not run' >&2\nexit 1\n")
        (stand_in / "ninja").chmod(0o755)
        env["PATH"] = f"{stand_in}:{env['PATH']}"
    report["ninja_stand_in"] = stand_in is not None
    vocab = int(plan.serving["vllm"]["resolved"].get("vocab_size") or 151936)
    # the install's TRT-LLM DeepGEMM cubins when the bundle has them, else an empty cache (they compile)
    strict = {**env, "FLASHINFER_DISABLE_JIT": "1",
              "TRTLLM_DG_CACHE_DIR": res.env().get("TRTLLM_DG_CACHE_DIR", str(tmp / "trtllm-dg"))}
    report["sampling_bundle"] = _child(SAMPLE.replace("VOCAB", str(vocab)), strict)
    shapes = sorted({tuple(s) for m in plan.serving["vllm"]["flashinfer"]["fp8_blockscale"]["modules"].values()
                     for s in m["shapes"]})
    report["fp8_bundle"] = _child(FP8.replace("SHAPES", repr([list(s) for s in shapes])), strict)
    report["workspace_untouched"] = not any((tmp / "fi-ws-bundle").rglob("*.so"))
    if os.environ.get("AOTWARM_SKIP_BARE"):  # the without-bundle timings were measured already
        Path(out_path).write_text(json.dumps(report, indent=1))
        print(json.dumps({k: report[k] for k in ("verify_section", "sampling_bundle", "fp8_bundle", "preflight")},
                         indent=1)[:6000])
        return 0
    # without the bundle: FlashInfer compiles the sampling module on this node at first use
    bare = {k: v for k, v in os.environ.items() if k != "FLASHINFER_DISABLE_JIT"}
    bare.update({"FLASHINFER_WORKSPACE_BASE": str(tmp / "fi-ws-empty"), "PATH": env["PATH"]})
    if stand_in is not None:
        bare["PATH"] = os.environ["PATH"]  # the real JIT needs the real ninja (FlashInfer runs it from PATH)
    report["sampling_without_bundle"] = _child(SAMPLE.replace("VOCAB", str(vocab)), bare)
    bare["TRTLLM_DG_CACHE_DIR"] = str(tmp / "trtllm-dg-empty")
    report["fp8_without_bundle"] = _child(FP8.replace("SHAPES", repr([list(s) for s in shapes])), bare)
    Path(out_path).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("verify_section", "sampling_bundle", "fp8_bundle", "sampling_without_bundle",
                                            "fp8_without_bundle", "preflight")}, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
