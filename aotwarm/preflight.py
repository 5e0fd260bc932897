"""Preflight: can a bundle hit on this node?  Every difference between the build and the node that makes keys
differ, named with both values -- the engine and the target GPU here, each cache kind's identity in its module.

Used by ``install`` (refuses, exit 3, unless forced) and ``verify`` (before it replays anything).
"""

from __future__ import annotations

from .errors import BadInput
from .kinds import KINDS, Mismatch


def preflight(manifest: dict, gpu: dict | None) -> list[Mismatch]:
    """Compare what the bundle was built for with this node; every difference that makes keys differ:
    the engine and the target GPU here, each cache kind's own identity in its module."""
    from .engines import detect_engine

    target = manifest["target"]
    out: list[Mismatch] = []

    def cmp(name: str, a, b, hint: str) -> None:
        if a != b:
            out.append(Mismatch(name, str(a), str(b), hint))

    for kind in KINDS:
        out.extend(kind.mismatches(manifest, gpu))
    try:
        eng = detect_engine(manifest["engine"]["name"]).to_dict()
        cmp(f"engine {eng['name']} version", manifest["engine"]["version"], eng["version"],
            "install the engine version the bundle was built with")
        cmp(f"engine {eng['name']} sources", manifest["engine"]["source_sha256"][:16], eng["source_sha256"][:16],
            "kernel source text and line numbers are in the key: use the identical engine build")
    except BadInput as err:
        out.append(Mismatch(f"engine {manifest['engine']['name']}", manifest["engine"]["version"], "not installed", str(err)))
    if gpu is not None:
        cmp("GPU compute capability", ".".join(map(str, target["capability"])), ".".join(map(str, gpu["capability"])),
            "build for this node's arch (--gpu)")
        if manifest["plan"].get("sm_count_sensitive"):
            cmp("GPU SM count", target["num_sms"], gpu["num_sms"], "the plan depends on the SM count: --gpu/--num-sms")
        if gpu.get("smem_optin") is not None:
            cmp("GPU shared memory per block (opt-in)", target["smem_optin"], gpu["smem_optin"],
                "kernel config lists depend on it: build for this GPU's profile")
    return out
