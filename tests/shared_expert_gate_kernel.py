"""A shared-expert gate kernel with the interface of vLLM PR #43190's
``vllm/model_executor/layers/fused_moe/shared_expert_gate.py`` (not in any vLLM release), written
here so the planner and the build can be tested against an engine that carries it:
``fused_shared_expert_gate(x, weight, out) -> sigmoid(x @ weight.T) * out``.

Point aotwarm at it with ``AOTWARM_SHARED_EXPERT_GATE_MODULE=tests.shared_expert_gate_kernel``.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _fused_shared_expert_gate_kernel(x_ptr, weight_ptr, out_ptr, y_ptr, stride_x_n, stride_out_n, stride_y_n,
                                     K: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_K)
    mask = cols < K
    x = tl.load(x_ptr + row * stride_x_n + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    gate = tl.sigmoid(tl.sum(x * w, axis=0))
    out = tl.load(out_ptr + row * stride_out_n + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_y_n + cols, (gate * out).to(y_ptr.dtype.element_ty), mask=mask)


def fused_shared_expert_gate(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if not (x.dim() == 2 and x.shape == out.shape and weight.shape == (1, x.shape[1])
            and x.stride(1) == 1 and out.stride(1) == 1 and weight.stride(1) == 1):
        return torch.sigmoid(torch.nn.functional.linear(x, weight)) * out
    y = torch.empty_like(out, memory_format=torch.contiguous_format)
    _fused_shared_expert_gate_kernel[(x.shape[0],)](x, weight, out, y, x.stride(0), out.stride(0), y.stride(0),
                                                     K=x.shape[1], BLOCK_K=triton.next_power_of_2(x.shape[1]),
                                                     num_warps=8)
    return y
