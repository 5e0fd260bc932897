"""vLLM 0.33's DeepGEMM calls, run on a real GPU: the M sweeps of a plan's DeepGEMM items, and identity.

Each op calls vLLM's own wrappers (``vllm.utils.deep_gemm.fp8_gemm_nt`` /
``m_grouped_fp8_gemm_nt_contiguous`` inside ``mk_alignment_scope``) with weights post-processed by
vLLM's ``deepgemm_post_process_fp8_weight_block`` (what ``DeepGemmFp8BlockScaledMMKernel`` does at
load), and activations / scales laid out as vLLM's DeepGEMM warmup lays them out.  DeepGEMM
compiles a kernel the first time its generated source is needed and finds it in
``DG_JIT_CACHE_DIR`` afterwards, so a sweep over every M compiles each distinct kernel once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any


def _wrappers():
    from .vllm_platform import ensure_cuda_platform

    ensure_cuda_platform()
    import vllm.utils.deep_gemm as vdg

    vdg._lazy_init()
    if vdg._import_deep_gemm() is None or not vdg.is_deep_gemm_supported():
        raise RuntimeError("vLLM's DeepGEMM is not usable here (no deep_gemm module, or this GPU is not sm90/sm100/sm120)")
    return vdg


def _weights(n: int, k: int, groups: int | None, device: str):
    import torch
    from vllm.model_executor.layers.quantization.utils.fp8_utils import deepgemm_post_process_fp8_weight_block

    vdg = _wrappers()
    shape = (n, k) if groups is None else (groups, n, k)
    w = torch.randn(shape, device=device, dtype=torch.bfloat16).clamp_(-4, 4).to(torch.float8_e4m3fn)
    # the block-scale grid as vLLM's create_fp8_scale_parameter sizes it, rounded up (N = 2112: 17 block rows);
    # not called here: it needs vLLM's tensor-parallel group, which a GPU node running one shape lacks
    grid = (-(-n // 128), -(-k // 128))
    ws = torch.rand(shape[:-2] + grid, device=device, dtype=torch.float32) + 0.5
    return deepgemm_post_process_fp8_weight_block(w, ws, (128, 128), use_e8m0=vdg.is_deep_gemm_e8m0_used())


def m_values(params: dict) -> list[int]:
    return list(range(params["m_first"], params["m_last"] + 1, params["m_step"]))


def _operands(n: int, k: int, groups: int | None, top: int, device: str):
    """Weight + scales as the layer holds them, and activation / scale / output buffers for up to ``top`` rows
    laid out as vLLM's DeepGEMM warmup lays them out (zero activation scales: UE8M0-safe)."""
    import torch

    w, ws = _weights(n, k, groups, device)
    a = torch.zeros((top, k), device=device, dtype=torch.float8_e4m3fn)
    a_s = torch.zeros((top, k // 128), device=device, dtype=torch.float32)
    out = torch.empty((top, n), device=device, dtype=torch.bfloat16)
    return w, ws, a, a_s, out


def _timed(ms: list[int], call) -> dict:
    import torch

    start = time.perf_counter()
    for m in ms:
        call(m)
    torch.cuda.synchronize()
    return {"m_visited": len(ms), "seconds": round(time.perf_counter() - start, 2)}


def sweep_fp8_gemm_nt(params: dict, device: str = "cuda", ms: list[int] | None = None) -> dict:
    """vLLM's dense FP8 block linear (DeepGemmFp8BlockScaledMMKernel) at every M."""
    vdg = _wrappers()
    ms = ms if ms is not None else m_values(params)
    w, ws, a, a_s, out = _operands(params["n"], params["k"], None, max(ms), device)
    return _timed(ms, lambda m: vdg.fp8_gemm_nt((a[:m], a_s[:m]), (w, ws), out[:m]))


def sweep_m_grouped_contiguous(params: dict, device: str = "cuda", ms: list[int] | None = None) -> dict:
    """vLLM's DeepGEMM MoE GEMM (grouped, contiguous layout) at every aligned M_sum."""
    import torch

    vdg = _wrappers()
    groups = params["groups"]
    ms = ms if ms is not None else m_values(params)
    w, ws, a, a_s, out = _operands(params["n"], params["k"], groups, max(ms), device)
    align = vdg.get_mk_alignment_for_contiguous_layout()[0]
    gen = torch.Generator(device=device).manual_seed(0)

    def call(m: int) -> None:
        ids = torch.randint(0, groups, (m // align,), device=device, dtype=torch.int32, generator=gen)
        with vdg.mk_alignment_scope(align):
            vdg.m_grouped_fp8_gemm_nt_contiguous((a[:m], a_s[:m]), (w, ws), out[:m], torch.repeat_interleave(ids, align))

    return _timed(ms, call)


SWEEPS = {"vllm.deepgemm_fp8_gemm_nt": sweep_fp8_gemm_nt,
          "vllm.deepgemm_m_grouped_fp8_gemm_nt_contiguous": sweep_m_grouped_contiguous}


def warmup_m_values(op: str, params: dict, max_tokens: int, mode: str = "relax") -> list[int]:
    """The M values (M_sum for MoE) vLLM 0.33's own DeepGEMM warmup visits for this shape, in ``mode``
    "relax" (its default) or "full" — computed by vLLM's functions (needs vLLM's platform set: GPU side)."""
    import torch
    from vllm.model_executor.warmup.deep_gemm_warmup import _generate_optimal_warmup_m_values

    device = torch.device("cuda", torch.cuda.current_device())
    if op == "vllm.deepgemm_fp8_gemm_nt":
        if mode == "full":
            return list(range(1, max_tokens + 1))
        return _generate_optimal_warmup_m_values(max_tokens, params["n"], device)
    from vllm.model_executor.layers.fused_moe.deep_gemm_utils import compute_aligned_M_and_alignment

    if mode == "full":
        tokens = range(1, max_tokens + 1)
    else:  # vLLM warms w13 and w2 with the larger N of the two (_get_grouped_gemm_params)
        tokens = set(_generate_optimal_warmup_m_values(max_tokens, params["warmup_n"], device)) | {max_tokens}
    return sorted({compute_aligned_M_and_alignment(m, params["top_k"], params["groups"], 128, None)[0]
                   for m in tokens})


def warmup_calls(op: str, params: dict, max_tokens: int) -> dict:
    """How many calls vLLM 0.33's own DeepGEMM warmup makes for this shape ("relax" and "full")."""
    try:
        return {mode: len(warmup_m_values(op, params, max_tokens, mode)) for mode in ("relax", "full")}
    except Exception as err:  # noqa: BLE001 - a count for the report; its absence is stated, not fatal
        return {"unavailable": f"{type(err).__name__}: {err}"[:300]}


def _nvcc() -> str:
    """The compiler DeepGEMM runs: DG_JIT_NVCC_COMPILER, else $CUDA_HOME/bin/nvcc, else nvcc on PATH."""
    explicit = os.environ.get("DG_JIT_NVCC_COMPILER")
    if explicit:
        return explicit
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = Path(home) / "bin" / "nvcc"
    return str(candidate) if candidate.exists() else (shutil.which("nvcc") or "nvcc")


def nvcc_release(compiler: str | None = None) -> str:
    """'release 13.0, V13.0.88' from ``nvcc --version`` (DeepGEMM keys its cache by the compiler), or 'none'."""
    try:
        text = subprocess.run([compiler or _nvcc(), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "none"
    lines = [ln.strip() for ln in text.splitlines() if "release" in ln]
    return lines[0].split("tools, ", 1)[-1] if lines else "none"


def library_identity() -> dict[str, Any]:
    """Which DeepGEMM vLLM imports and a digest of its JIT headers (no GPU needed)."""
    import importlib.util

    spec = importlib.util.find_spec("deep_gemm") or importlib.util.find_spec("vllm.third_party.deep_gemm")
    if spec is None or not spec.origin:
        return {"found": False}
    root = Path(spec.origin).parent
    digest = hashlib.sha256()
    include = root / "include" / "deep_gemm"
    for path in sorted(include.rglob("*")) if include.is_dir() else []:
        if path.is_file():
            digest.update(str(path.relative_to(include)).encode() + b"\0" + path.read_bytes())
    version = None
    init = root / "__init__.py"
    for line in init.read_text().splitlines() if init.is_file() else []:
        if line.startswith("__version__"):
            version = line.split("=", 1)[1].strip().strip("'\"")
    return {"found": True, "module": spec.name, "version": version, "library_root": str(root),
            "include_sha256": digest.hexdigest(), "nvcc": nvcc_release()}


def device_identity() -> dict[str, Any]:
    """What DeepGEMM bakes into generated code on this GPU: arch and SM count (needs the GPU)."""
    import torch

    vdg = _wrappers()
    major, minor = torch.cuda.get_device_capability()
    return {"gpu": torch.cuda.get_device_name(), "arch": f"{major}{minor}{'a' if major >= 9 else ''}",
            "num_sms": int(vdg.get_num_sms())}
