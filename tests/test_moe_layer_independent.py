"""The fused-MoE plan against vLLM's own MoE layer objects, not against aotwarm's rebuild of them.

The plan's sweep goes through aotwarm's record of vLLM's modular kernel and its rebuild in build workers
(``vllm_codec`` -> ``vllm_moe.Experts``); a test replaying that rebuild would only show self-consistency.
``tests/independent/moe_layer_keys.py`` instead calls, in its own process, the quant method of each MoE
layer vLLM built (``quant_method.apply(layer, ...)`` as vLLM's runner calls it) for every token count, and
groups the token counts by the JIT keys they reach.  The plan's groups must be the same, key for key.
"""

import json
import os
from pathlib import Path

import pytest

from aotwarm.plan import ServingArgs
from aotwarm.targets import resolve_target
from tests.conftest import requires_vllm_stack
from tests.independent.child import Child
from tests.test_planner_moe_vllm import CONFIGS
from tests.vllm_plans import vllm_plan

ROOT = Path(__file__).resolve().parents[1]

FIXTURES = ROOT / "tests" / "fixtures"
CASES = [  # (config, vllm serve arguments): FP8 block, bf16 with expert parallel, DeepSeek-V3, INT8 W8A8, online FP8
    (CONFIGS / "Qwen--Qwen3-30B-A3B-FP8.json", ("--tensor-parallel-size", "2")),
    (CONFIGS / "Qwen--Qwen3.5-35B-A3B.json", ("--tensor-parallel-size", "2", "--enable-expert-parallel")),
    (FIXTURES / "deepseek-ai--DeepSeek-V3.json", ("--tensor-parallel-size", "8")),
    (FIXTURES / "constructed--Qwen3-30B-A3B-quantized.w8a8.json", ("--tensor-parallel-size", "2")),
    (CONFIGS / "Qwen--Qwen3.5-35B-A3B.json", ("--tensor-parallel-size", "2", "--quantization", "fp8")),
]


IDS = ["qwen3-30b-fp8-tp2", "qwen3.5-35b-tp2-ep", "dsv3-tp8", "qwen3-30b-w8a8-int8-tp2", "qwen3.5-35b-tp2-online-fp8"]


class LayerRuns:
    """The harness for every case, started together (child processes: the CPU-bound sweeps overlap each other
    and the plans' resolutions), each awaited by its test."""

    def __init__(self, tmp: Path, gpu: str):
        target = json.dumps(resolve_target(gpu).target.to_dict())
        env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
        self.children = {}
        for case_id, (config, argv) in zip(IDS, CASES):
            folder = tmp / case_id
            folder.mkdir()
            (folder / "config.json").write_text(config.read_text())
            self.children[case_id] = Child(folder, ["-m", "tests.independent.moe_layer_keys", str(folder), target,
                                                    "--", *argv], env)

    def result(self, case_id: str) -> dict:
        return self.children[case_id].result(timeout=900)

    def stop(self) -> None:
        for child in self.children.values():
            child.stop()


@pytest.fixture(scope="module")
def layer_runs(tmp_path_factory):
    runs = LayerRuns(tmp_path_factory.mktemp("moe-layers"), "h200")
    yield runs
    runs.stop()


def comparable(groups: list[dict]) -> list[tuple]:
    return [(g["first"], g["last"], g["count"], sorted(g["keys"])) for g in groups]


@pytest.mark.slow
@requires_vllm_stack
@pytest.mark.parametrize("case_id", IDS)
def test_plan_sweep_equals_vllms_own_layer_over_every_token_count(case_id, layer_runs):
    path, argv = CASES[IDS.index(case_id)]
    plan = vllm_plan(path, *argv, families=("fused-moe",))
    planned = {k["layer"]: k for k in ServingArgs.from_dict(plan.serving).vllm["moe"] if "sweep" in k}
    independent = layer_runs.result(case_id)
    assert planned and set(independent["kinds"]) == set(planned)
    for layer, kind in planned.items():
        own = independent["kinds"][layer]
        assert kind["experts"].endswith(":" + own["experts"])
        assert sum(g["count"] for g in own["groups"]) == independent["max_tokens"] == kind["max_tokens"]
        assert comparable(kind["sweep"]) == comparable(own["groups"]), layer
