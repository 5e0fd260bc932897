"""Gated DeltaNet family planner (fla-core 0.6 engine).

Every GDN layer of a model has the same shapes, so one set of work items covers all layers.  The
specialization drivers, read from fla-core 0.6's kernels and checked by ``aotwarm plan --audit``
(random shapes through the real entry points, compared key by key with the plan):

* chunk prefill kernels (cumsum, fused kkt+solve_tril, recompute_w_u, chunk_h, chunk_o): ``T``
  (and ``N``) are ``do_not_specialize``; autotune keys are head counts/dims, ``BT=64`` and the
  argument dtypes.  The cumsum key contains the batch size ``B`` of the padded form, and the
  ``USE_INITIAL_STATE`` / ``STORE_FINAL_STATE`` heuristics are constexprs.
* ``l2norm_fwd_kernel`` (q/k l2norm in the kernel path): autotune key ``NB = cdiv(rows, 65536)``
  with ``rows = B*T*HV``: one key per 65536-row bucket of the token range.
* ``fused_recurrent_gated_delta_rule_fwd_kernel`` (decode): ``N``/``T`` are ``do_not_specialize``.
* ``layer_norm_gated_fwd_kernel`` (gated RMSNorm): autotune key ``NB = cdiv(tokens*HV, 65536)``.
"""

from __future__ import annotations

from ..engines import EngineInfo
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target
from .intmath import cdiv

NB_ROWS = 2048 * 32  # fla: NB = triton.cdiv(rows, 2048 * 32)

CHUNK_KERNELS = ("chunk_local_cumsum_scalar_kernel", "chunk_gated_delta_rule_fwd_kkt_solve_kernel",
                 "recompute_w_u_fwd_kernel", "chunk_gated_delta_rule_fwd_kernel_h_blockdim64", "chunk_fwd_kernel_o")


# (initial_state, output_final_state): USE_INITIAL_STATE / STORE_FINAL_STATE are constexprs of chunk_h.
# (False, True) is planned at every NB bucket; the other three combinations once each.
STATE_VARIANTS = ((True, True), (False, False), (True, False))


def _state_label(h0: bool, final: bool) -> str:
    return f"{'with' if h0 else 'no'}-initial-state-{'store' if final else 'no'}-final-state"


def _state_reason(h0: bool, final: bool) -> str:
    start = "continuing from a cached state (USE_INITIAL_STATE)" if h0 else "fresh sequences"
    end = "state stored for decode" if final else "no state stored: forward without a cache (STORE_FINAL_STATE=False)"
    return f"{start}, {end}"


def nb_buckets(max_rows: int) -> list[int]:
    return list(range(1, cdiv(max_rows, NB_ROWS) + 1))


def smallest_count_in_bucket(nb: int, rows_per_count: int) -> int:
    """Smallest count c with cdiv(c * rows_per_count, NB_ROWS) == nb."""
    return ((nb - 1) * NB_ROWS) // rows_per_count + 1


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    if spec.gdn is None or spec.num_gdn_layers == 0:
        return FamilyCoverage("gdn", "not-applicable", f"{spec.text_model_type} has no Gated DeltaNet layers"), []
    if engine.name != "fla":
        return FamilyCoverage("gdn", "not-covered", f"no GDN planner for engine {engine.name}"), []
    dims = spec.gdn.local(serving.tp)
    hv = dims.num_v_heads
    dtype = serving.dtype or spec.dtype
    state_dtype = "float32"
    max_tokens = serving.max_num_batched_tokens
    common = {"num_v_heads": hv, "head_k_dim": dims.head_k_dim, "head_v_dim": dims.head_v_dim,
              "dtype": dtype, "state_dtype": state_dtype}
    items: list[WorkItem] = []

    def prefill(item_id: str, reason: str, **params) -> None:
        items.append(WorkItem(item_id, "gdn", "fla.gdn_chunk_prefill", {**common, **params}, reason))

    # padded batch form ([B, T, HV, D]) as transformers' generate() calls it
    for b in range(1, serving.max_prefill_batch + 1):
        t_max = max_tokens // b
        for nb in nb_buckets(b * t_max * hv):
            t = smallest_count_in_bucket(nb, b * hv)
            prefill(f"gdn/prefill/batch{b}/nb{nb}",
                    f"prefill, batch {b}: tokens {t}..{min(t_max, (nb * NB_ROWS) // (b * hv))} give l2norm NB={nb}",
                    form="batch", batch=b, tokens=t, initial_state=False, output_final_state=True)
        for h0, final in STATE_VARIANTS:
            prefill(f"gdn/prefill/batch{b}/{_state_label(h0, final)}",
                    f"prefill, batch {b}, {_state_reason(h0, final)}",
                    form="batch", batch=b, tokens=1, initial_state=h0, output_final_state=final)
    # packed varlen form (cu_seqlens, int32 as transformers' padding-free batching passes it)
    for nb in nb_buckets(max_tokens * hv):
        t = smallest_count_in_bucket(nb, hv)
        prefill(f"gdn/prefill/packed/nb{nb}",
                f"packed varlen prefill: tokens {t}..{min(max_tokens, (nb * NB_ROWS) // hv)} give l2norm NB={nb}",
                form="packed", tokens=t, num_seqs=1, cu_seqlens_dtype="int32", initial_state=False, output_final_state=True)
    for h0, final in STATE_VARIANTS:
        prefill(f"gdn/prefill/packed/{_state_label(h0, final)}", f"packed varlen prefill, {_state_reason(h0, final)}",
                form="packed", tokens=1, num_seqs=1, cu_seqlens_dtype="int32", initial_state=h0, output_final_state=final)

    items.append(WorkItem("gdn/decode", "gdn", "fla.gdn_recurrent_decode", {**common, "batch": 1},
                          f"decode, one token per sequence: batch 1..{serving.max_num_seqs} share one kernel (N, T not specialized)"))
    max_norm_rows = max(max_tokens, serving.max_num_seqs) * hv
    for nb in nb_buckets(max_norm_rows):
        t = smallest_count_in_bucket(nb, hv)
        items.append(WorkItem(f"gdn/gated-rmsnorm/nb{nb}", "gdn", "fla.gdn_gated_rmsnorm",
                              {"rows": t * hv, "num_v_heads": hv, "head_v_dim": dims.head_v_dim, "dtype": dtype,
                               "activation": spec.hidden_act, "eps": spec.rms_norm_eps},
                              f"gated RMSNorm over tokens×{hv} heads: tokens {t}.. give NB={nb}"))

    n_nb = len(nb_buckets(max_tokens * hv))
    kernels = [
        KernelCoverage(k, f"prefill tokens 1..{max_tokens}", [
            "T, N do_not_specialize: every token count shares one compile key",
            f"padded batch B=1..{serving.max_prefill_batch} (B is in the cumsum autotune key) and packed varlen (int32 cu_seqlens)",
            "initial state none/present x final state stored (generate) / not stored (forward without cache): all 4",
            "pointers 16-byte aligned (inputs made contiguous by fla's input_guard)"])
        for k in CHUNK_KERNELS
    ] + [
        KernelCoverage("l2norm_fwd_kernel", f"prefill tokens 1..{max_tokens}",
                       [f"autotune key NB = cdiv(B*T*{hv}, 65536): NB 1..{n_nb} at batch 1"]),
        KernelCoverage("fused_recurrent_gated_delta_rule_fwd_kernel", f"decode batch 1..{serving.max_num_seqs}",
                       ["N, T do_not_specialize: one compile key"]),
        KernelCoverage("layer_norm_gated_fwd_kernel", f"tokens 1..{max(max_tokens, serving.max_num_seqs)}",
                       [f"autotune key NB = cdiv(tokens*{hv}, 65536): NB 1..{len(nb_buckets(max_norm_rows))}",
                        f"activation {spec.hidden_act!r}, weight in {dtype}"]),
    ]
    coverage = FamilyCoverage(
        "gdn", "planned",
        f"{spec.num_gdn_layers} GDN layers, TP-local HK={dims.num_k_heads} HV={hv} K={dims.head_k_dim} "
        f"V={dims.head_v_dim}, {dtype}, state {state_dtype}",
        kernels,
        uncovered=["causal conv1d: transformers runs the causal-conv1d package's precompiled CUDA kernels "
                   "(or a torch fallback); no Triton JIT, nothing to bundle",
                   "full-attention layers: flash-attn / SDPA, not a Triton JIT family"],
    )
    return coverage, items


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    """Random shapes drawn from the ranges the plan claims to cover, one per planned op kind.

    ``aotwarm plan --audit N`` runs N of these key-only and checks every JIT key they reach is one
    the plan reaches; a key outside the plan is a hole in the planner.
    """
    by_op: dict[str, dict] = {}
    for item in items:
        by_op.setdefault(item.op + "/" + str(item.params.get("form", "")), item.params)
    out: list[WorkItem] = []
    max_tokens, max_seqs = serving.max_num_batched_tokens, serving.max_num_seqs
    for kind, base in sorted(by_op.items()):
        op = kind.split("/")[0]
        p = dict(base)
        if op == "fla.gdn_chunk_prefill" and p["form"] == "batch":
            b = rng.randint(1, serving.max_prefill_batch)
            p.update(batch=b, tokens=rng.randint(1, max_tokens // b), initial_state=rng.random() < 0.3,
                     output_final_state=rng.random() < 0.8)
        elif op == "fla.gdn_chunk_prefill":
            t = rng.randint(1, max_tokens)
            p.update(tokens=t, num_seqs=rng.randint(1, min(t, max_seqs)), initial_state=rng.random() < 0.3)
        elif op == "fla.gdn_recurrent_decode":
            p.update(batch=rng.randint(1, max_seqs))
        elif op == "fla.gdn_gated_rmsnorm":
            hv = base["num_v_heads"]
            p.update(rows=rng.randint(1, max(max_tokens, max_seqs)) * hv)
        out.append(WorkItem(f"audit/{kind}", "gdn", op, p, "audit sample"))
    return out
