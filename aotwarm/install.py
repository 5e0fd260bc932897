"""Install a bundle into a directory on a serving node.

Every member is checked against the manifest before anything is written; files are extracted into
a private temporary directory beside the destination, group files are pointed at the destination
(Triton stores absolute paths in ``__grp__*.json``; without this every kernel recompiles), and each
cache entry is then moved into place with one atomic rename.  A re-install of the same bundle is a
no-op; entries another bundle already installed are kept.

Layout of DIR:  ``triton/`` (TRITON_CACHE_DIR)  ·  ``aotwarm/<bundle sha256>.json`` (installed manifests)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .bundle import TRITON_PREFIX, read_bundle, relocate_group_file
from .errors import BadInput
from .fsutil import atomic_write_text, sha256_file


@dataclass
class InstallResult:
    dest: Path
    triton_cache: Path
    entries_added: int
    entries_present: int
    files: int
    bundle_sha256: str
    manifest: dict

    def env(self) -> dict[str, str]:
        return engine_env(self.dest)


def engine_env(dest: Path) -> dict[str, str]:
    """What the serving engine's environment needs to use an installed bundle."""
    return {
        "TRITON_CACHE_DIR": str(Path(dest).resolve() / "triton"),
        # autotune results are read from the cache dir only if this is set before the engine imports its kernels
        "TRITON_CACHE_AUTOTUNING": "1",
    }


def _prepare_dest(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "triton").mkdir(exist_ok=True)
        (dest / "aotwarm").mkdir(exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create {err.filename or dest}: {err.strerror}; pick a writable --dir")
    for sub in (dest, dest / "triton", dest / "aotwarm"):
        if not os.access(sub, os.W_OK | os.X_OK):
            raise BadInput(f"install directory {sub} is not writable: pick a writable --dir or fix its permissions")


def _same_entry(a: Path, b: Path) -> bool:
    names_a = sorted(p.name for p in a.iterdir())
    names_b = sorted(p.name for p in b.iterdir())
    return names_a == names_b and all(sha256_file(a / n) == sha256_file(b / n) for n in names_a)


def install(bundle: Path, dest: Path) -> InstallResult:
    bundle, dest = Path(bundle), Path(dest).expanduser().absolute()
    manifest = read_bundle(bundle)  # pass 1: validate everything, write nothing
    _prepare_dest(dest)
    cache_dir = dest / "triton"
    try:
        staging = Path(tempfile.mkdtemp(prefix=".aotwarm-install-", dir=dest))
    except OSError as err:
        raise BadInput(f"cannot write in {dest}: {err.strerror}")
    try:
        count = [0]

        def write(name: str, data: bytes) -> None:
            rel = name[len(TRITON_PREFIX):]
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.name.startswith("__grp__"):
                data = relocate_group_file(data, cache_dir)
            target.write_bytes(data)
            count[0] += 1

        try:
            read_bundle(bundle, sink=write)  # pass 2: the same checks again while writing into staging
        except OSError as err:
            raise BadInput(f"cannot write into {dest}: {err.strerror} (disk full or read-only?); nothing was installed")
        added = present = 0
        for entry in sorted(p for p in staging.iterdir() if p.is_dir()):
            final = cache_dir / entry.name
            if final.exists():
                if _same_entry(entry, final):
                    present += 1
                    continue
                # same compile key, different bytes (e.g. an entry a crashed compile left half-written): replace
                old = staging / f".old-{entry.name}"
                os.rename(final, old)
            os.rename(entry, final)
            added += 1
        bundle_sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
        record = {"bundle": str(bundle.resolve()), "bundle_sha256": bundle_sha, "manifest": manifest}
        atomic_write_text(dest / "aotwarm" / f"{bundle_sha}.json", json.dumps(record, indent=1, sort_keys=True))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return InstallResult(dest, cache_dir, added, present, count[0], bundle_sha, manifest)


def installed_manifest(dest: Path, bundle_sha: str) -> dict | None:
    try:
        return json.loads((Path(dest) / "aotwarm" / f"{bundle_sha}.json").read_text())["manifest"]
    except (OSError, json.JSONDecodeError, KeyError):
        return None
