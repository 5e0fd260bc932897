"""Gated DeltaNet family planner for vLLM 0.33 (``QwenGatedDeltaNetAttention``, Qwen3.5 / Qwen3-Next).

Everything vLLM decides comes from vLLM's own answer for the serving command (``serving.vllm``, see
``engines.vllm_resolve``): the layer's TP-local dims, state dtypes and the *layout of the state pool*
(conv and SSM states are slices of the hybrid KV-cache page, so their block stride is the page;
strides are constexprs of the conv, decode and checkpoint kernels), the prefill and decode kernels
the layer chose, the CUDA-graph mode and capture sizes, the batch limits.  This planner only
enumerates the specialization classes over the ranges vLLM allows.

What each Triton kernel of the layer specializes on, read from vLLM 0.33's sources and checked by
``aotwarm plan --audit N`` (random serving shapes through vLLM's own functions, key by key):

* ``_causal_conv1d_fwd_kernel`` (prefill conv): strides and ``dim`` are constexprs, the token count
  only sizes the grid, ``num_cache_lines`` is keyed on ``== 1`` only: one key per input layout.
* ``_fused_post_conv_kernel``: the token count ``L`` is a specialized int -> classes 1, %16, other.
* chunk pipeline (Triton backend only): ``T``/``N`` are ``do_not_specialize``; one autotune key per
  kernel for the model's head dims and dtypes.  On sm90 (and sm100/sm120 with K=128, CUDA >= 13)
  vLLM runs FlashInfer's JIT prefill instead: reported as not covered by this bundle.
* ``layer_norm_fwd_kernel`` (RMSNormGated): ``M = tokens * HV`` is a specialized int and
  ``ROWS_PER_BLOCK = min(next_pow2(cdiv(M, 2 * SMs)), 4)`` a constexpr -> one key per reachable
  (class of M, ROWS_PER_BLOCK); this depends on the SM count.
* ``_causal_conv1d_update_kernel``: ``batch`` is a specialized int (classes over the reachable
  decode batch sizes: CUDA-graph capture sizes, then eager sizes up to ``max_num_seqs``); the
  speculative variant has ``seqlen = k + 1`` and a longer state as constexprs.
* ``fused_recurrent_gated_delta_rule_packed_decode_kernel``: constexprs only; the grid switches to
  ``SPLIT_BATCH_HEAD_GRID`` when ``B * HV > 65535``, and on the sm100 family with K=V=128 ``BV``
  depends on ``B * HV <= 64``.
* ``fused_sigmoid_gating_delta_rule_update_kernel``: ``N``/``T`` are ``do_not_specialize``; one key
  for the decode part of mixed batches, one for speculative sequences.
"""

from __future__ import annotations

from ..engines import EngineInfo
from ..errors import BadInput
from ..model import ModelSpec
from ..plan import FamilyCoverage, KernelCoverage, ServingArgs, WorkItem
from ..targets import Target
from .intmath import cdiv, int_class, next_pow2

CHUNK_KERNELS = ("chunk_local_cumsum_scalar_kernel", "chunk_scaled_dot_kkt_fwd_kernel",
                 "merge_16x16_to_64x64_inverse_kernel", "recompute_w_u_fwd_kernel",
                 "chunk_gated_delta_rule_fwd_kernel_h_blockdim64", "chunk_fwd_kernel_o")
FUSED_MTP_STATE_DTYPES = ("bfloat16", "float32")


def rows_per_block(m: int, sms: int) -> int:
    """vLLM 0.33 ``calc_rows_per_block``."""
    return min(next_pow2(cdiv(m, 2 * sms)), 4)


FULL_DECODE_GRAPH_MODES = ("FULL", "FULL_AND_PIECEWISE", "FULL_DECODE_ONLY")


def decode_batches(serving: ServingArgs, query_len: int = 1) -> list[int]:
    """Every sequence count a decode-only step of ``query_len`` tokens per sequence can present.

    With a full decode CUDA graph (vLLM's ``cudagraph_mode``) uniform decode batches are captured at
    vLLM's capture sizes (the kernels are dispatched once, at capture, with the padded size); anything
    else runs the GDN op eagerly at its real size: batches above the largest graph, every batch
    without full decode graphs, and plain one-token decode steps when speculative decoding is on (the
    graphs are then captured for ``k + 1`` tokens per sequence).
    """
    resolved = serving.vllm["resolved"]
    limit = min(serving.max_num_seqs, serving.max_num_batched_tokens // query_len)
    full = not serving.enforce_eager and resolved["cudagraph_mode"] in FULL_DECODE_GRAPH_MODES
    if not full or query_len != 1 + serving.num_speculative_tokens:
        return list(range(1, limit + 1))
    graphs = [s // query_len for s in resolved["cudagraph_capture_sizes"]
              if s % query_len == 0 and s // query_len <= limit]
    largest = max(graphs, default=0)
    # batches up to the largest captured size are padded to a capture size; larger ones run eagerly
    return sorted(set(graphs) | set(range(largest + 1, limit + 1)))


def class_representatives(values: list[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in sorted(values):
        out.setdefault(int_class(v), v)
    return out


def gdn_facts(serving: ServingArgs) -> dict:
    """vLLM's facts about the model's GDN layer (BadInput when the plan was not resolved by vLLM)."""
    facts = (serving.vllm or {}).get("gdn")
    if not facts:
        raise BadInput("the vLLM GDN planner needs vLLM's own resolution of the serving config "
                       "(plan with --engine vllm; vLLM found no Gated DeltaNet layer in this model)")
    return facts


def layer_params(spec: ModelSpec, serving: ServingArgs) -> dict:
    """The parameters every GDN op gets: TP-local dims, dtypes and the state layout, as vLLM built them."""
    g = gdn_facts(serving)
    return {"num_k_heads": g["num_k_heads"], "num_v_heads": g["num_v_heads"], "head_k_dim": g["head_k_dim"],
            "head_v_dim": g["head_v_dim"], "conv_kernel": g["conv_kernel"], "dtype": serving.dtype or spec.dtype,
            "conv_state_dtype": g["conv_state_dtype"], "ssm_state_dtype": g["ssm_state_dtype"],
            "interleaved": g["interleaved"], "num_spec": serving.num_speculative_tokens,
            "state": g["state"], "cache_blocks": min(serving.max_num_seqs, 256) + 1}


def norm_rows(max_tokens: int, hv: int, sms: int) -> dict[tuple[str, int], int]:
    """(class of M, ROWS_PER_BLOCK) -> the smallest token count reaching it (vLLM's own enumeration)."""
    out: dict[tuple[str, int], int] = {}
    for t in range(1, max_tokens + 1):
        m = t * hv
        out.setdefault((int_class(m), rows_per_block(m, sms)), t)
    return out


def plan_family(spec: ModelSpec, target: Target, serving: ServingArgs, engine: EngineInfo
                ) -> tuple[FamilyCoverage, list[WorkItem]]:
    if spec.gdn is None or spec.num_gdn_layers == 0:
        return FamilyCoverage("gdn", "not-applicable", f"{spec.text_model_type} has no Gated DeltaNet layers"), []
    base = layer_params(spec, serving)
    facts = gdn_facts(serving)
    hv, k, v = base["num_v_heads"], base["head_k_dim"], base["head_v_dim"]
    max_tokens, nspec = serving.max_num_batched_tokens, serving.num_speculative_tokens
    backend = facts["prefill_backend"]
    backend_why = f"vLLM's layer chose the {backend} GDN prefill on {target.key} (--gdn-prefill-backend)"
    items: list[WorkItem] = []
    kernels: list[KernelCoverage] = []
    uncovered: list[str] = []

    def add(item_id: str, op: str, reason: str, **params) -> None:
        items.append(WorkItem(item_id, "gdn", f"vllm.{op}", {**base, **params}, reason))

    # -- prefill ---------------------------------------------------------------------------------
    add("gdn/conv-prefill", "gdn_conv_prefill", "prefill conv1d: token count only sizes the grid",
        tokens=min(64, max_tokens), num_seqs=1)
    conv_classes = ["one key: strides/dim constexpr, num_cache_lines keyed on == 1 only (never 1 in serving)"]
    if nspec:
        add("gdn/conv-prefill/spec-batch", "gdn_conv_prefill",
            "prefill conv1d in a batch with speculative sequences (input gathered with index_select: contiguous rows)",
            tokens=min(64, max_tokens), num_seqs=1, gathered=True)
        conv_classes.append("batches with speculative sequences: gathered (contiguous) input rows")
    kernels.append(KernelCoverage("_causal_conv1d_fwd_kernel", f"prefill tokens 1..{max_tokens}", conv_classes))

    post = class_representatives(list(range(1, max_tokens + 1)))
    post_classes = []
    for cls, t in sorted(post.items(), key=lambda kv: kv[1]):
        add(f"gdn/post-conv/L-{cls}", "gdn_post_conv", f"fused post-conv prep, prefill-only batch, L={t} (class {cls})",
            tokens=t)
        post_classes.append(f"L specialized: class {cls} at L={t}")
        if t + 1 <= max_tokens:  # behind decode tokens: sliced a/b/conv rows (one token keeps the projection stride)
            add(f"gdn/post-conv/L-{cls}/mixed", "gdn_post_conv",
                f"fused post-conv prep, L={t} prefill tokens behind 1 decode token (sliced inputs)",
                tokens=t, decode_tokens=1)
            post_classes.append(f"class {cls} behind decode tokens (mixed batch)")
    kernels.append(KernelCoverage("_fused_post_conv_kernel", f"prefill tokens 1..{max_tokens}", post_classes))

    if backend == "triton":
        add("gdn/chunk-prefill", "gdn_chunk_prefill", f"chunked prefill pipeline ({backend_why})",
            tokens=min(64, max_tokens), num_seqs=1)
        for kern in CHUNK_KERNELS:
            kernels.append(KernelCoverage(kern, f"prefill tokens 1..{max_tokens}, any number of sequences", [
                "T, N do_not_specialize: every token count shares one compile key",
                "initial state always passed (gathered from the mamba cache), final state always stored",
                f"one autotune key (HV={hv}, K={k}, V={v}, BT=64, dtypes): every config compiled"]))
    else:
        uncovered.append(f"GDN chunked prefill: {backend_why}; FlashInfer 0.7's GDN prefill is a CuTe DSL kernel "
                         "(sm90: compiled in memory in every process; what it costs: the flashinfer family), not "
                         "in this bundle. Use --gdn-prefill-backend triton (and the same setting in vLLM) to plan "
                         "the Triton path")

    if facts["checkpoint_export"]:
        _plan_checkpoint_export(facts, nspec, add, kernels)

    # -- gated RMSNorm (every token of every batch) ----------------------------------------------
    sms = target.num_sms
    if facts["norm_custom_op"]:
        rows = norm_rows(max_tokens, hv, sms)
        for (cls, rpb), t in sorted(rows.items(), key=lambda kv: kv[1]):
            add(f"gdn/gated-rmsnorm/M-{cls}/rows{rpb}", "gdn_gated_rmsnorm",
                f"RMSNormGated over {t}x{hv} rows: M class {cls}, ROWS_PER_BLOCK={rpb} at {sms} SMs",
                tokens=t, weight_dtype=base["dtype"], activation=spec.gdn_output_gate, eps=spec.rms_norm_eps)
        kernels.append(KernelCoverage("layer_norm_fwd_kernel", f"tokens 1..{max_tokens} (M = tokens x {hv})",
                                      [f"M class {c}, ROWS_PER_BLOCK {r} from {t} tokens"
                                       for (c, r), t in sorted(rows.items(), key=lambda kv: kv[1])]
                                      + [f"ROWS_PER_BLOCK depends on the SM count ({sms})"]))
    else:
        uncovered.append("RMSNormGated: vLLM runs its torch code, compiled into the model by torch.compile "
                         "(custom op rms_norm_gated is off under custom_ops 'none'); those are Inductor kernels "
                         "in vLLM's compile cache, not this bundle (--enforce-eager or "
                         "-O '{\"custom_ops\": [\"+rms_norm_gated\"]}' switches to the Triton kernel, which is planned)")

    # -- decode ------------------------------------------------------------------------------------
    batches = decode_batches(serving)
    reps = class_representatives(batches)
    for cls, b in sorted(reps.items(), key=lambda kv: kv[1]):
        add(f"gdn/conv-update/batch-{cls}", "gdn_conv_update", f"decode conv update, batch {b} (class {cls})", batch=b)
    conv_update = KernelCoverage("_causal_conv1d_update_kernel", _batch_range(batches, serving),
                                 [f"batch class {c} at {b}" for c, b in sorted(reps.items(), key=lambda kv: kv[1])])
    kernels.append(conv_update)
    sig_classes = ["N, T do_not_specialize: decode part of mixed batches"]
    if facts["packed_recurrent_decode"]:
        packed = _packed_variants(batches, hv, k, v, target, base["ssm_state_dtype"])
        for label, b in packed.items():
            add(f"gdn/packed-decode/{label}", "gdn_packed_decode", f"packed recurrent decode, batch {b} ({label})",
                batch=b)
        kernels.append(KernelCoverage("fused_recurrent_gated_delta_rule_packed_decode_kernel",
                                      _batch_range(batches, serving),
                                      [f"{label} (batch {b})" for label, b in packed.items()]))
    else:  # VLLM_ENABLE_FLA_PACKED_RECURRENT_DECODE=0: decode-only batches take the general path
        sig_classes.append("decode-only batches (packed recurrent decode is off in this vLLM environment)")
    add("gdn/sigmoid-gating/mixed", "gdn_sigmoid_gating_update",
        "recurrent update of the decode part of a prefill+decode batch", batch=1)
    if nspec:
        spec_batches = decode_batches(serving, query_len=nspec + 1)
        sreps = class_representatives(spec_batches)
        for cls, b in sorted(sreps.items(), key=lambda kv: kv[1]):
            add(f"gdn/conv-update/spec-batch-{cls}", "gdn_conv_update",
                f"speculative conv update: {b} sequences x {nspec + 1} tokens (class {cls})", batch=b, speculative=True)
        conv_update.classes.extend(f"speculative ({nspec + 1} tokens/seq): batch class {c} at {b}"
                                   for c, b in sorted(sreps.items(), key=lambda kv: kv[1]))
        add("gdn/sigmoid-gating/spec", "gdn_sigmoid_gating_update",
            f"speculative recurrent update ({nspec + 1} tokens per sequence, accepted-token counts)", batch=1,
            speculative=True)
        sig_classes.append(f"speculative sequences ({nspec + 1} tokens each)")
        if facts["fused_spec_decode"]:
            uncovered.append("speculative decode-only steps run vLLM's AOT CUDA op fused_gdn_decode_post_conv_mtp "
                             "(the layer's decode kernel is 'cuda'): compiled into vLLM, no JIT, nothing to bundle")
    kernels.append(KernelCoverage("fused_sigmoid_gating_delta_rule_update_kernel", "any decode batch", sig_classes))
    kernels.sort(key=lambda kc: kc.kernel)

    ssm = base["state"]["ssm"]
    summary = (f"{facts['layers']} GDN layers, TP-local HK={base['num_k_heads']} HV={hv} K={k} V={v}, "
               f"{base['dtype']}, conv state {base['conv_state_dtype']}, SSM state {base['ssm_state_dtype']} "
               f"in vLLM's KV-cache pages (block stride {ssm['stride'][0]} elements), prefill backend {backend}"
               + (f", {nspec} speculative tokens" if nspec else ""))
    uncovered.append("full-attention layers: FlashAttention / FlashInfer attention backends, not a Triton JIT family")
    return FamilyCoverage("gdn", "planned", summary, kernels, uncovered=uncovered), items


def _plan_checkpoint_export(facts: dict, nspec: int, add, kernels: list[KernelCoverage]) -> None:
    """``store_cache_checkpoints_kernel``: all constexprs but its pointers; the recurrent-rows pointer is a
    slice after ``num_prefills + 1`` int64 starts, so an odd or even number of prefill sequences gives
    a 16-byte aligned or unaligned pointer (two keys); batches with speculative sequences gather the
    input rows (contiguous)."""
    every = 64  # FlashInfer's checkpoint granularity (FLASHINFER_GDN_CHECKPOINT_ALIGNMENT); only sizes the grid
    classes = []
    variants = [(False, "")] + ([(True, "/spec-batch")] if nspec else [])
    for gathered, tag in variants:
        for seqs, parity in ((1, "odd"), (2, "even")):
            add(f"gdn/checkpoint-export/{parity}-prefills{tag}", "gdn_checkpoint_export",
                f"prefix-cache checkpoint export after FlashInfer prefill, {parity} number of prefill sequences "
                f"(recurrent-rows pointer {'16-byte aligned' if parity == 'odd' else 'unaligned'})"
                + (", input gathered (speculative batch)" if gathered else ""),
                num_seqs=seqs, every_n_tokens=every, checkpoint_buffer=facts["checkpoint_buffer"], gathered=gathered)
            classes.append(f"{parity} prefill sequences{tag and ' in batches with speculative sequences'}")
    kernels.append(KernelCoverage("store_cache_checkpoints_kernel",
                                  "every prefill that crosses a prefix-cache block (mamba cache mode align)", classes))


def _batch_range(batches: list[int], serving: ServingArgs) -> str:
    mode = "eager" if serving.enforce_eager else "CUDA-graph sizes then eager"
    return f"decode batch 1..{max(batches, default=0)} ({mode})"


def _packed_variants(batches: list[int], hv: int, k: int, v: int, target: Target, ssm_dtype: str) -> dict[str, int]:
    """Distinct constexpr combinations of the packed decode kernel over the reachable batches."""
    out: dict[str, int] = {}
    for b in batches:
        split = b * hv > 65535
        bv = min(next_pow2(v), 32)
        if k == v == 128 and target.capability[0] == 10:
            bv = 4 if b * hv <= 64 else (8 if ssm_dtype == "float32" else bv)
        # one sequence: b/a keep the projection's row stride (.contiguous() is a no-op on one row),
        # and the row stride is a constexpr of this kernel
        rows = "batch1" if b == 1 else "batch>1"
        out.setdefault(f"BV{bv}-{rows}" + ("-split-grid" if split else ""), b)
    return out


def audit_items(items: list[WorkItem], serving: ServingArgs, rng) -> list[WorkItem]:
    """Random serving shapes in the covered ranges, one per planned op kind."""
    by_kind: dict[str, dict] = {}
    for item in items:
        by_kind.setdefault(item.op + ("/spec" if item.params.get("speculative") else ""), item.params)
    out: list[WorkItem] = []
    max_tokens, max_seqs = serving.max_num_batched_tokens, serving.max_num_seqs
    for kind, base in sorted(by_kind.items()):
        op = kind.split("/")[0]
        p = dict(base)
        if op in ("vllm.gdn_conv_prefill", "vllm.gdn_chunk_prefill"):
            t = rng.randint(1, max_tokens)
            p.update(tokens=t, num_seqs=rng.randint(1, min(t, max_seqs)))
        elif op == "vllm.gdn_post_conv":
            t = rng.randint(1, max_tokens)
            p.update(tokens=t, decode_tokens=rng.choice([0, rng.randint(0, max_tokens - t)]))
        elif op == "vllm.gdn_gated_rmsnorm":
            p.update(tokens=rng.randint(1, max_tokens))
        elif p.get("speculative"):
            p.update(batch=rng.randint(1, max(1, min(max_seqs, max_tokens // (serving.num_speculative_tokens + 1)))))
        else:
            p.update(batch=rng.randint(1, min(max_seqs, max_tokens)))
        out.append(WorkItem(f"audit/{kind}", "gdn", op, p, "audit sample"))
    return out
