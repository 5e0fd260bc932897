"""For the GPU check scripts: point Triton at a cache and record every compile (name, cache hit).

Import this before anything imports Triton's kernels: ``events = compile_events.watch(cache_dir)``.
"""

import os


def watch(cache_dir: str) -> list:
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    os.environ["TRITON_CACHE_AUTOTUNING"] = "1"
    from triton import knobs

    events: list = []
    knobs.compilation.listener = lambda *, src, metadata, metadata_group, times, cache_hit: events.append(
        (metadata["name"], cache_hit))
    return events


def summary(events: list) -> dict:
    return {"compiles": sum(not hit for _, hit in events), "hits": sum(hit for _, hit in events),
            "misses": sorted({name for name, hit in events if not hit})}
