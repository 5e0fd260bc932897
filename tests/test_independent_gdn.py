"""The independent check, on the CPU: every JIT key vLLM's own GDN layer reaches must be in aotwarm's plan.

The expectation comes from vLLM's objects only (``tests/independent/vllm_gdn_layer.py``: vLLM's config,
model, KV-cache planning and binding, metadata builder and layer forward, run under the virtual target
GPU with compiles skipped), never from aotwarm's planners or engine ops.  It failed on the main of
2026-11-29, whose ops allocated a contiguous state pool: 9 of the 11 keys vLLM's layer reached (the
conv, decode and checkpoint kernels, whose state strides are constexprs) were outside that plan.
"""

from pathlib import Path

import pytest

from tests.conftest import QWEN35_35B, QWEN35_9B, requires_vllm_stack
from tests.independent.child import Child
from tests.vllm_plans import vllm_plan

pytest.importorskip("vllm")
pytestmark = [pytest.mark.slow, requires_vllm_stack]


def layer_run(path: Path, argv: list[str], n_prefill: int, folder: Path) -> Child:
    """The harness in a fresh process (it builds a vLLM config, process groups and a model once), started
    before the plan is probed so the two overlap."""
    (folder / "config.json").write_text(path.read_text())
    code = ("import json, sys; from tests.independent.vllm_gdn_layer import layer_keys; "
            "from aotwarm.targets import PROFILES; "
            f"print(json.dumps(layer_keys({str(folder)!r}, {argv!r}, PROFILES['h200'], n_prefill={n_prefill}, "
            f"seed=11)))")
    return Child(folder, ["-c", code])


# the serving arguments of tests/test_planner_gdn_vllm.py (one vLLM resolution each, cached)
@pytest.mark.parametrize("path,argv", [
    (QWEN35_9B, ["--max-num-seqs", "8"]),  # prefix caching on: align mode, checkpoint export
    (QWEN35_35B, ["--tensor-parallel-size", "2", "--no-enable-prefix-caching", "--max-num-seqs", "8"]),
    (QWEN35_9B, ["--gdn-prefill-backend", "triton", "--max-num-seqs", "64", "--max-num-batched-tokens", "4096"]),
])
def test_every_key_vllms_layer_reaches_is_planned(path, argv, tmp_path):
    from aotwarm.probe import probe_plan

    run = layer_run(path, argv, n_prefill=12, folder=tmp_path)
    plan = probe_plan(vllm_plan(path, *argv), jobs=2)
    planned = set(plan.probe["jit_keys"])
    seen = run.result()
    assert seen["calls"] > 12 and seen["layer"], seen["calls"]  # 12 prefills + every decode batch
    outside = [k.split("|", 1)[0] for k in seen["layer"] if k not in planned]
    assert outside == [], f"vLLM's layer reached {len(outside)} key(s) the plan lacks: {sorted(set(outside))}"
