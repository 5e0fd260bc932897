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
    from aotwarm.observe import Observer  # counts compiles (hit/miss), autotune benchmarks, C builds; chained

    observer = Observer().install()
    import torch

    from tests.independent.launches import replay

    # vLLM's kernel modules read vLLM's platform at import: its own CUDA platform where its compiled ops
    # were carried, else aotwarm's stand-in (see aotwarm.engines.vllm_platform)
    from aotwarm.engines.vllm_platform import ensure_cuda_platform

    platform = ensure_cuda_platform()
    replayed = replay(recorded["recorded"], "cuda")
    torch.cuda.synchronize()
    seen = observer.take()
    compiles = seen["compiles"]
    print(json.dumps({"replayed": replayed, "recorded_forwards": recorded["calls"],
                      "recorded_launches": recorded["launches"], "vllm_platform": platform,
                      "compiles": sum(not c["cache_hit"] for c in compiles), "hits": sum(c["cache_hit"] for c in compiles),
                      "misses": sorted({c["kernel"] for c in compiles if not c["cache_hit"]}),
                      "benchmarks": len(seen["benchmarks"]), "c_builds": seen["c_builds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
