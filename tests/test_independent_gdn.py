"""The independent check, on the CPU: every JIT key vLLM's own GDN layer reaches must be in aotwarm's plan.

The expectation comes from vLLM's objects only (``tests/independent/vllm_gdn_layer.py``: vLLM's config,
model, KV-cache planning and binding, metadata builder and layer forward, run under the virtual target
GPU with compiles skipped), never from aotwarm's planners or engine ops.  It failed on the main of
2026-11-29, whose ops allocated a contiguous state pool: 9 of the 11 keys vLLM's layer reached (the
conv, decode and checkpoint kernels, whose state strides are constexprs) were outside that plan.
"""

import json
import tempfile
from pathlib import Path

import pytest

from tests.conftest import QWEN35_35B, QWEN35_9B, requires_vllm_stack
from tests.vllm_plans import vllm_plan

pytest.importorskip("vllm")
pytestmark = [pytest.mark.slow, requires_vllm_stack]


class LayerRun:
    """The harness in a fresh process (it builds a vLLM config, process groups and a model once), started
    before the plan is probed so the two overlap; ``result()`` waits for it."""

    def __init__(self, path: Path, argv: list[str], n_prefill: int):
        import subprocess
        import sys

        root = Path(__file__).resolve().parents[1]
        self.tmp = tempfile.TemporaryDirectory()
        folder = Path(self.tmp.name)
        (folder / "config.json").write_text(path.read_text())
        code = ("import json, sys; from tests.independent.vllm_gdn_layer import layer_keys; "
                "from aotwarm.targets import PROFILES; "
                f"print(json.dumps(layer_keys({str(folder)!r}, {argv!r}, PROFILES['h200'], n_prefill={n_prefill}, "
                f"seed=11)))")
        self.out, self.err = open(folder / "out.txt", "w+"), open(folder / "err.txt", "w+")  # files: no pipe fills
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=self.out, stderr=self.err, cwd=root)

    def result(self) -> dict:
        try:
            code = self.proc.wait(timeout=1200)
            self.out.seek(0), self.err.seek(0)
            out, err = self.out.read(), self.err.read()
            assert code == 0, err[-3000:]
            return json.loads(out.strip().splitlines()[-1])
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.out.close(), self.err.close()
            self.tmp.cleanup()


# the serving arguments of tests/test_planner_gdn_vllm.py (one vLLM resolution each, cached)
@pytest.mark.parametrize("path,argv", [
    (QWEN35_9B, ["--max-num-seqs", "8"]),  # prefix caching on: align mode, checkpoint export
    (QWEN35_35B, ["--tensor-parallel-size", "2", "--no-enable-prefix-caching", "--max-num-seqs", "8"]),
    (QWEN35_9B, ["--gdn-prefill-backend", "triton", "--max-num-seqs", "64", "--max-num-batched-tokens", "4096"]),
])
def test_every_key_vllms_layer_reaches_is_planned(path, argv):
    from aotwarm.probe import probe_plan

    run = LayerRun(path, argv, n_prefill=12)
    plan = probe_plan(vllm_plan(path, *argv), jobs=2)
    planned = set(plan.probe["jit_keys"])
    seen = run.result()
    assert seen["calls"] > 12 and seen["layer"], seen["calls"]  # 12 prefills + every decode batch
    outside = [k.split("|", 1)[0] for k in seen["layer"] if k not in planned]
    assert outside == [], f"vLLM's layer reached {len(outside)} key(s) the plan lacks: {sorted(set(outside))}"
