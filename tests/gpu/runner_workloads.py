"""On a GPU: vLLM's Model Runner V2 started on the GPU (``engines.vllm_runner.V2Runner``: vLLM's runner, its
profiling pass and JIT warm-up) and serving random workloads through vLLM's own scheduler -- random arrivals,
prompt and output lengths, and per-request feature mixes drawn from every request feature the OpenAI-compatible
server accepts.  Counts Triton compiles (cache hits and misses) with Triton's own listener.

    python -m tests.gpu.runner_workloads CONFIG_JSON WORKLOADS SEED [-- VLLM_ARGS...]

Prints one JSON line: compiles and hits per phase (start-up, each workload), the distinct batch compositions
served, and the seconds of the start-up and of the first workload.  The workloads are drawn here, independently
of the plan's.
"""

import json
import random
import sys
import time
from pathlib import Path


def random_workload(rng: random.Random, features: tuple[str, ...], max_seqs: int):
    from aotwarm.engines.vllm_runner import RequestShape

    n = rng.choice([1, 2, rng.randint(1, 16), rng.randint(1, 64), rng.randint(1, max_seqs)])
    return [RequestShape(arrive=rng.randint(0, n), prompt_len=rng.choice([rng.randint(1, 32), rng.randint(1, 9000)]),
                         max_tokens=rng.randint(1, 24),
                         features=tuple(f for f in features if rng.random() < rng.choice([0.2, 0.5, 0.9])),
                         seed=rng.randrange(1 << 30)) for _ in range(n)]


def main(argv: list[str]) -> int:
    config, workloads, seed = Path(argv[0]).read_text(), int(argv[1]), int(argv[2])
    vllm_args = argv[4:] if len(argv) > 3 and argv[3] == "--" else []
    from triton import knobs

    events: list[tuple[str, str, bool]] = []
    phase = {"now": "build"}
    previous = knobs.compilation.listener

    def listener(**kwargs):
        events.append((phase["now"], kwargs["metadata"]["name"], bool(kwargs["cache_hit"])))
        if previous is not None:
            previous(**kwargs)

    knobs.compilation.listener = listener
    from aotwarm.engines.vllm_runner import REQUEST_FEATURES, V2Runner

    started = time.time()
    runner = V2Runner(config, vllm_args, "cuda")
    built = time.time()
    phase["now"] = "start-up"
    runner.start_up()
    import torch

    torch.cuda.synchronize()
    up = time.time()
    rng = random.Random(seed)
    compositions: set[tuple[int, int]] = set()
    steps, first_workload_s = 0, None
    for i in range(workloads):
        phase["now"] = f"workload-{i}"
        t = time.time()
        info = runner.serve(random_workload(rng, REQUEST_FEATURES, runner.vc.scheduler_config.max_num_seqs))
        torch.cuda.synchronize()
        if first_workload_s is None:
            first_workload_s = round(time.time() - t, 3)
        steps += info["steps"]
        compositions.update(tuple(b) for b in info["batches"])
    done = time.time()
    by_phase: dict[str, dict] = {}
    for name, kernel, hit in events:
        p = by_phase.setdefault(name if name in ("build", "start-up") else "serving", {"compiles": 0, "hits": 0,
                                                                                      "compiled": []})
        p["hits" if hit else "compiles"] += 1
        if not hit:
            p["compiled"].append(kernel)
    print(json.dumps({"workloads": workloads, "steps": steps, "batch_compositions": len(compositions),
                      "runner_build_s": round(built - started, 1), "start_up_s": round(up - built, 3),
                      "first_workload_s": first_workload_s, "serving_s": round(done - up, 3),
                      "compiles": sum(1 for e in events if not e[2]), "hits": sum(1 for e in events if e[2]),
                      "phases": by_phase}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
