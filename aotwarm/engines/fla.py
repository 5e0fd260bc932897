"""fla-core (flash-linear-attention) engine: the Triton kernels Hugging Face transformers runs for
Qwen3.5 / Qwen3-Next Gated DeltaNet layers when flash-linear-attention is installed.

Ops call fla's public entry points exactly as a GDN layer does:

* ``gdn_chunk_prefill``: ``fla.ops.gated_delta_rule.chunk_gated_delta_rule`` with q/k already
  repeated to the value-head count (transformers does ``repeat_interleave``), ``g`` in fp32,
  ``use_qk_l2norm_in_kernel=True``; either the padded batch form ``[B, T, HV, D]`` that
  ``generate()`` uses, or the packed varlen form (``cu_seqlens``) used by padding-free batching.
* ``gdn_recurrent_decode``: ``fused_recurrent_gated_delta_rule`` for one new token per sequence.
* ``gdn_gated_rmsnorm``: ``fla.modules.FusedRMSNormGated``'s function ``rms_norm_gated`` on
  ``[rows, head_v_dim]``.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from ..errors import BadInput
from . import EngineInfo, package_location, package_source_sha256, torch_dtype

SUPPORTED = ("0.6",)


def detect() -> EngineInfo:
    try:
        version = importlib.metadata.version("fla-core")
    except importlib.metadata.PackageNotFoundError:
        raise BadInput("engine 'fla' is not installed: pip install 'aotwarm[fla]' (fla-core 0.6)")
    if not version.startswith(SUPPORTED):
        raise BadInput(f"fla-core {version} is installed but aotwarm supports fla-core {', '.join(SUPPORTED)}.x: "
                       f"install fla-core==0.6.0 (the version your serving image runs must match)")
    location = package_location("fla", "fla-core")
    return EngineInfo("fla", "fla-core", version, package_source_sha256(location), str(location))


def gdn_chunk_prefill(p: dict[str, Any], device: str) -> None:
    import torch
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    dt, sdt = torch_dtype(p["dtype"]), torch_dtype(p["state_dtype"])
    hv, dk, dv = p["num_v_heads"], p["head_k_dim"], p["head_v_dim"]
    packed = p["form"] == "packed"
    b, t = (1, p["tokens"]) if packed else (p["batch"], p["tokens"])
    n_seqs = p["num_seqs"] if packed else b
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(b, t, hv, dk, dtype=dt, device=device, generator=gen)
    k = torch.randn(b, t, hv, dk, dtype=dt, device=device, generator=gen)
    v = torch.randn(b, t, hv, dv, dtype=dt, device=device, generator=gen)
    g = torch.nn.functional.logsigmoid(torch.randn(b, t, hv, dtype=torch.float32, device=device, generator=gen))
    beta = torch.rand(b, t, hv, dtype=dt, device=device, generator=gen)
    kwargs: dict[str, Any] = {}
    if packed:
        bounds = torch.linspace(0, t, n_seqs + 1).round().long().tolist()
        kwargs["cu_seqlens"] = torch.tensor(bounds, dtype=torch_dtype(p["cu_seqlens_dtype"]), device=device)
    h0 = torch.zeros(n_seqs, hv, dk, dv, dtype=sdt, device=device) if p["initial_state"] else None
    chunk_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=h0, output_final_state=p["output_final_state"],
                           use_qk_l2norm_in_kernel=True, **kwargs)


def gdn_recurrent_decode(p: dict[str, Any], device: str) -> None:
    import torch
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule

    dt, sdt = torch_dtype(p["dtype"]), torch_dtype(p["state_dtype"])
    b, hv, dk, dv = p["batch"], p["num_v_heads"], p["head_k_dim"], p["head_v_dim"]
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(b, 1, hv, dk, dtype=dt, device=device, generator=gen)
    k = torch.randn(b, 1, hv, dk, dtype=dt, device=device, generator=gen)
    v = torch.randn(b, 1, hv, dv, dtype=dt, device=device, generator=gen)
    g = torch.nn.functional.logsigmoid(torch.randn(b, 1, hv, dtype=torch.float32, device=device, generator=gen))
    beta = torch.rand(b, 1, hv, dtype=dt, device=device, generator=gen)
    h0 = torch.zeros(b, hv, dk, dv, dtype=sdt, device=device)
    fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=h0, output_final_state=True,
                                     use_qk_l2norm_in_kernel=True)


def gdn_gated_rmsnorm(p: dict[str, Any], device: str) -> None:
    import torch
    from fla.modules.fused_norm_gate import rms_norm_gated

    dt = torch_dtype(p["dtype"])
    rows, dv = p["rows"], p["head_v_dim"]
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(rows, dv, dtype=dt, device=device, generator=gen)
    z = torch.randn(rows, dv, dtype=dt, device=device, generator=gen)
    weight = torch.ones(dv, dtype=dt, device=device)
    with torch.no_grad():
        rms_norm_gated(x, z, weight, None, activation=p["activation"], eps=p["eps"])


def import_kernels(device: str) -> None:
    """Import the kernel modules the ops use (benchmarks keep imports out of timed regions)."""
    import fla.modules.fused_norm_gate  # noqa: F401
    import fla.ops.gated_delta_rule  # noqa: F401


OPS = {
    "gdn_chunk_prefill": gdn_chunk_prefill,
    "gdn_recurrent_decode": gdn_recurrent_decode,
    "gdn_gated_rmsnorm": gdn_gated_rmsnorm,
}
