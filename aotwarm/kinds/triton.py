"""Triton's cache as a cache kind: member names, install into the generation, engine env, identity checks.

Triton is the base kind: the installed generation *is* the engine's ``TRITON_CACHE_DIR``
(``DIR/triton``), and the other kinds live in sub-directories of it, so one rename publishes all.  Its
build (``build.py``: the plan's work items in pool workers under the virtual GPU) and its verify replay
(``verify.py``) are the core of those commands; this module holds what the other kinds hold too.

Entries are merged, not overwritten blindly: an entry the install already has byte for byte is kept, an
entry with the same key and other bytes is taken whole from the bundle.  Group files
(``__grp__*.json``) hold absolute paths; the bundle stores a placeholder, pointed at ``DIR/triton`` here.
Triton >= 3.8 looks ``cuda_utils`` up under a key holding the node's paths: the bundle's entry is filed
under this node's key (``launchers.node_cuda_utils_entry``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..errors import BadInput
from .base import InstallContext, Mismatch

LABEL = "Triton cache entries"  # how output names this kind's files
NAME = "triton"
PREFIX = "triton/"
INSTALL_SUBDIR = ""
STAGING = ".aotwarm.staging"
CACHE_PLACEHOLDER = "@AOTWARM_TRITON_CACHE_DIR@"
_MEMBER = re.compile(r"^triton/[A-Z2-7]{52}/[A-Za-z0-9_.\-]{1,255}$")


def member_ok(name: str) -> bool:
    return bool(_MEMBER.match(name))


def shipped(manifest: dict) -> bool:
    """Whether the bundle carries Triton files (a manifest without a file list: assume it does)."""
    files = manifest.get("files")
    return files is None or any(f["path"].startswith(PREFIX) for f in files)


def normalize_group_file(data: bytes, cache_root: Path) -> bytes:
    """Replace the builder's absolute cache path in a ``__grp__*.json`` with a placeholder."""
    group = json.loads(data)
    root = str(cache_root).rstrip("/") + "/"
    paths = {}
    for child, p in sorted(group.get("child_paths", {}).items()):
        if not p.startswith(root):
            raise ValueError(f"group file child {p} is outside the cache root {root}")
        paths[child] = CACHE_PLACEHOLDER + "/" + p[len(root):]
    return json.dumps({"child_paths": paths}, sort_keys=True).encode()


def relocate_group_file(data: bytes, cache_dir: Path) -> bytes:
    """Point a bundled group file's children at ``cache_dir`` (the node's TRITON_CACHE_DIR)."""
    group = json.loads(data)
    paths = {c: p.replace(CACHE_PLACEHOLDER, str(cache_dir).rstrip("/"), 1)
             for c, p in group.get("child_paths", {}).items()}
    return json.dumps({"child_paths": paths}).encode()


def collect_entries(cache_root: Path, entries: set[str]) -> dict[str, bytes]:
    """Read the files of the given cache entries, group files normalized; keys are archive paths."""
    files: dict[str, bytes] = {}
    for entry in sorted(entries):
        entry_dir = cache_root / entry
        if not entry_dir.is_dir():
            raise BadInput(f"cache entry {entry} vanished from {cache_root} during the build: re-run the build")
        for f in sorted(entry_dir.iterdir()):
            if not f.is_file() or f.name.startswith("tmp."):
                continue
            data = f.read_bytes()
            if f.name.startswith("__grp__"):
                data = normalize_group_file(data, cache_root)
            files[f"{PREFIX}{entry}/{f.name}"] = data
    return files


def install_member(ctx: InstallContext, name: str, data: bytes) -> None:
    rekey = ctx.state.get(NAME)
    if rekey is None:
        rekey = ctx.state[NAME] = _launcher_rekey(ctx.manifest, ctx.notes)
    entry, _, member = name[len(PREFIX):].partition("/")
    if entry in rekey:
        if rekey[entry] is None:
            return
        entry = rekey[entry]
    target = ctx.generation / STAGING / entry / member
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.name.startswith("__grp__"):
        data = relocate_group_file(data, ctx.cache_dir)
    target.write_bytes(data)
    ctx.files += 1


def install_finish(ctx: InstallContext) -> None:
    """Merge the staged entries into the generation (which holds hard links to the current one's)."""
    staging = ctx.generation / STAGING
    if not staging.is_dir():
        return
    for entry in sorted(p for p in staging.iterdir() if p.is_dir()):
        final = ctx.generation / entry.name
        if final.exists():
            if _same_entry(entry, final):
                ctx.present += 1
                continue
            shutil.rmtree(final)  # same key, other bytes: take the bundle's entry whole
        os.rename(entry, final)
        ctx.added += 1
    shutil.rmtree(staging)


def _same_entry(a: Path, b: Path) -> bool:
    files_a = sorted(p.name for p in a.iterdir())
    if files_a != sorted(p.name for p in b.iterdir()):
        return False
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in files_a)


def _launcher_rekey(manifest: dict, notes: list[str]) -> dict[str, str | None]:
    """The bundle's ``cuda_utils`` entry -> this node's entry (None: not installable here, with a note)."""
    entry = (manifest.get("launchers") or {}).get("node_keyed_entry")
    if not entry:
        return {}
    try:
        from ..launchers import node_cuda_utils_entry

        node_entry, how = node_cuda_utils_entry()
    except ImportError:
        node_entry, how = None, "Triton is not importable here, so its key for cuda_utils cannot be computed"
    if node_entry is None:
        notes.append(f"cuda_utils not installed: {how}; without it the engine compiles it with the node's C "
                     f"compiler on first use")
    return {entry: node_entry}


def engine_env(cache_dir: Path, manifest: dict) -> dict[str, str]:
    env = {
        "TRITON_CACHE_DIR": str(cache_dir),
        # autotune results are read from the cache dir only if this is set before the engine imports its kernels
        "TRITON_CACHE_AUTOTUNING": "1",
    }
    if (manifest or {}).get("launchers", {}).get("node_keyed_entry") and os.environ.get("TRITON_LIBCUDA_PATH"):
        # Triton >= 3.8 keys cuda_utils by it: the engine must see the value install keyed it with
        env["TRITON_LIBCUDA_PATH"] = os.environ["TRITON_LIBCUDA_PATH"]
    return env


def mismatches(manifest: dict, gpu: dict | None) -> list[Mismatch]:
    """Everything that enters Triton's cache key and differs between the build and this node (nothing, for a
    bundle without Triton files: a FlashInfer-only bundle does not depend on this node's Python or Triton)."""
    from ..envinfo import fingerprint

    if not shipped(manifest):
        return []
    target = manifest["target"]
    arch = target["capability"][0] * 10 + target["capability"][1]
    built = manifest["fingerprint"]
    node = fingerprint(arch=arch).to_dict()
    out: list[Mismatch] = []

    def cmp(name: str, a, b, hint: str) -> None:
        if a != b:
            out.append(Mismatch(name, str(a), str(b), hint))

    cmp("python_abi", built["python_abi"], node["python_abi"],
        "Triton's key hashes libtriton.so, which differs per CPython minor: build with the node's Python")
    cmp("triton_version", built["triton_version"], node["triton_version"], "build with the node's Triton wheel")
    cmp("triton_key", built["triton_key_sha256"][:16], node["triton_key_sha256"][:16],
        "a different Triton build (wheel, index or source): build with the node's exact Triton")
    cmp(f"compiler backend (sm{arch})", built["backend_hash_sha256"].get(str(arch), "?")[:16],
        node["backend_hash_sha256"].get(str(arch), "?")[:16], "ptxas differs (TRITON_PTXAS_PATH or another Triton)")
    for var in sorted(set(built["key_env"]) | set(node["key_env"])):
        cmp(f"env {var}", built["key_env"].get(var, "<unset>"), node["key_env"].get(var, "<unset>"),
            "this variable enters Triton's cache key: set it identically (unset is not the same as 0)")
    return out
