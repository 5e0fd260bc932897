"""GPU: replay recorded kernel launches (``launches.py``) against a Triton cache; count compiles.

    python -m tests.independent.replay_gpu LAUNCHES_JSON TRITON_CACHE_DIR

Prints one JSON line: launches replayed, compiles (misses) with kernel names, cache hits, autotune
benchmarks, C compiler runs.  TRITON_CACHE_DIR is set before Triton is imported.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    recorded, cache_dir = json.loads(Path(argv[0]).read_text()), argv[1]
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    os.environ["TRITON_CACHE_AUTOTUNING"] = "1"
    from triton import knobs
    from triton.runtime import build as triton_build
    from triton.runtime.autotuner import Autotuner

    events: list[tuple[str, bool]] = []
    previous = knobs.compilation.listener  # e.g. `aotwarm record`'s, when this runs recorded

    def listener(*, src, metadata, metadata_group, times, cache_hit):
        events.append((metadata["name"], bool(cache_hit)))
        if previous is not None:
            previous(src=src, metadata=metadata, metadata_group=metadata_group, times=times, cache_hit=cache_hit)

    knobs.compilation.listener = listener
    benchmarks: list[str] = []
    bench = Autotuner._bench

    def counting_bench(self, *args, config, **kwargs):
        benchmarks.append(str(config))
        return bench(self, *args, config=config, **kwargs)

    Autotuner._bench = counting_bench
    c_builds: list[str] = []
    build = triton_build._build

    def counting_build(name, *args, **kwargs):
        c_builds.append(name)
        return build(name, *args, **kwargs)

    triton_build._build = counting_build
    import torch

    from tests.independent.launches import replay

    # vLLM's kernel modules read vLLM's platform at import: its own CUDA platform where its compiled ops
    # were carried, else aotwarm's stand-in (see aotwarm.engines.vllm_platform)
    from aotwarm.engines.vllm_platform import ensure_cuda_platform

    platform = ensure_cuda_platform()
    replayed = replay(recorded["recorded"], "cuda")
    torch.cuda.synchronize()
    print(json.dumps({"replayed": replayed, "recorded_forwards": recorded["calls"],
                      "recorded_launches": recorded["launches"], "vllm_platform": platform,
                      "compiles": sum(not hit for _, hit in events), "hits": sum(hit for _, hit in events),
                      "misses": sorted({n for n, hit in events if not hit}), "benchmarks": len(benchmarks),
                      "c_builds": c_builds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
