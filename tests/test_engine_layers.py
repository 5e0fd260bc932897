"""No silent path: every kind of layer vLLM builds for each fixture model has a line in the plan (planned by a
family, not a JIT, or not covered with the reason); an unknown layer class fails this test."""

from pathlib import Path

import pytest

from aotwarm.planners import engine_layers
from aotwarm.plan import ServingArgs
from tests.conftest import requires_vllm_stack
from tests.test_planner_moe_vllm import CONFIGS
from tests.vllm_plans import vllm_plan

FIXTURES = Path(__file__).parent / "fixtures"
# the serving arguments other tests resolve with, so the cached resolutions are shared
MODELS = [(CONFIGS / "Qwen--Qwen3.5-9B.json", ()),
          (CONFIGS / "Qwen--Qwen3-30B-A3B-FP8.json", ("--tensor-parallel-size", "2")),
          (CONFIGS / "Qwen--Qwen3.5-35B-A3B.json", ("--tensor-parallel-size", "2", "--enable-expert-parallel")),
          (CONFIGS / "Qwen--Qwen3-8B-FP8.json", ()),
          (FIXTURES / "Qwen--Qwen3-Next-80B-A3B-Instruct-FP8.json", ("--tensor-parallel-size", "4")),
          (FIXTURES / "deepseek-ai--DeepSeek-V3.json", ("--tensor-parallel-size", "8"))]


@requires_vllm_stack
@pytest.mark.parametrize("path,argv", MODELS, ids=[p.stem for p, _ in MODELS])
def test_every_layer_kind_vllm_builds_has_a_line(path, argv):
    plan = vllm_plan(path, *argv, families=("all",))
    fam = next(f for f in plan.families if f.family == "engine-layers")
    lines = [*(fam.kernels[0].classes if fam.kernels else []), *fam.uncovered]
    assert lines and not [ln for ln in lines if "unclassified" in ln], lines
    modules = ServingArgs.from_dict(plan.serving).vllm["modules"]
    leaves = [m for m in modules if m["children"] == 0 and not m["class"].startswith("torch.nn.modules.container")]
    for leaf in leaves:  # every leaf class vLLM built is named in a line
        assert any(ln.startswith(leaf["class"].rpartition(":")[2]) for ln in lines), leaf["class"]


def test_an_unknown_layer_class_is_reported_not_skipped():
    serving = ServingArgs(engine="vllm", families=("engine-layers",),
                          vllm={"resolved": {}, "modules": [{"class": "vllm.x:Mystery", "count": 3, "children": 0,
                                                             "bases": [], "custom_op": False, "enabled": None,
                                                             "quant_method": None}]})
    fam, items = engine_layers.plan_family(None, None, serving, None)
    assert items == [] and fam.uncovered == ["Mystery: unclassified -- aotwarm does not know whether it JIT-compiles [3]"]
