"""Install a bundle into a directory on a serving node — atomically, idempotently, safely in parallel.

Layout of DIR::

    DIR/triton -> .aotwarm-gen-<id>     TRITON_CACHE_DIR: a symlink to the current generation
    DIR/.aotwarm-gen-<id>/<entries>     Triton cache entries (kernels, autotune results, launchers)
    DIR/.aotwarm-gen-<id>/.deep_gemm/   DeepGEMM's cache (DG_JIT_CACHE_DIR)
    DIR/.aotwarm-gen-<id>/.flashinfer/  FlashInfer AOT modules and their provider package (PYTHONPATH)
    DIR/.aotwarm-gen-<id>/.aotwarm/     one record per installed bundle (its manifest)
    DIR/.aotwarm.lock                   serializes installers

Every member is checked against the manifest before anything is written. A new generation is
assembled beside the current one (hard links to the files already installed, then the bundle's
members, each written by its cache kind's ``install_member``, then each kind's ``install_finish``), and
published with one atomic ``rename`` of the symlink. An install killed at any point leaves ``DIR/triton`` either as it was or
fully installed; leftovers of a killed install are hidden directories that the next install
removes. Installs of different bundles merge (an entry both carry is taken whole from the bundle
being installed); concurrent installs take turns on the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .bundle import SinkError, read_bundle
from .errors import BadInput, Incompatible
from .kinds import KINDS, InstallContext, kind_of_member
from .fsutil import sha256_file

GEN_PREFIX = ".aotwarm-gen-"
RECORDS = ".aotwarm"


@dataclass
class InstallResult:
    dest: Path
    triton_cache: Path
    entries_added: int
    entries_present: int
    files: int
    bundle_sha256: str
    manifest: dict
    notes: list[str] = field(default_factory=list)  # what was not installed as shipped, and why

    def env(self) -> dict[str, str]:
        return engine_env(self.dest, self.manifest)


def engine_env(dest: Path, manifest: dict | None = None) -> dict[str, str]:
    """What the serving engine's environment needs to use an installed bundle (every cache kind's part)."""
    from .kinds import engine_env as kinds_env

    return kinds_env(cache_dir(dest), manifest)


def cache_dir(dest: Path) -> Path:
    """The stable path of an install (``DIR/triton``: the symlink to the published generation)."""
    return Path(dest).absolute() / "triton"


def _prepare_dest(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create {err.filename or dest}: {err.strerror}; pick a writable --dir")
    if not os.access(dest, os.W_OK | os.X_OK):
        raise BadInput(f"install directory {dest} is not writable: pick a writable --dir or fix its permissions")
    link = dest / "triton"
    if link.exists() and not link.is_symlink():
        raise BadInput(f"{link} is a plain directory, not an aotwarm install: install into an empty directory "
                       f"(or move that cache away first)")


def _current_generation(dest: Path) -> Path | None:
    link = dest / "triton"
    if not link.is_symlink():
        return None
    target = dest / os.readlink(link)
    return target if target.is_dir() else None


def _remove_leftovers(dest: Path, keep: Path | None) -> None:
    """Generations and staging areas left by killed installs (called with the lock held)."""
    for p in dest.iterdir():
        if p.name.startswith(GEN_PREFIX) and (keep is None or p.name != keep.name):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(".aotwarm-link-"):
            p.unlink(missing_ok=True)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across devices) every file of ``src`` into ``dst``."""
    for root, _dirs, files in os.walk(src):
        out = dst / Path(root).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(Path(root) / name, out / name)
            except OSError:
                shutil.copy2(Path(root) / name, out / name)


def check_compatible(manifest: dict) -> None:
    """Refuse (exit 3) a bundle whose keys cannot match this environment, when Triton is here to ask."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return
    from .preflight import preflight

    mismatches = preflight(manifest, gpu=None)
    if mismatches:
        more = f" (+{len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        raise Incompatible(f"bundle cannot hit in this environment: {mismatches[0].line()}{more}; "
                           f"use --force to install it anyway")


def install(bundle: Path, dest: Path, force: bool = False) -> InstallResult:
    bundle, dest = Path(bundle), Path(dest).expanduser().absolute()
    manifest = read_bundle(bundle)  # pass 1: validate everything, write nothing
    if not force:
        check_compatible(manifest)
    created = not dest.exists()
    _prepare_dest(dest)
    bundle_sha = sha256_file(bundle)
    try:
        lock = open(dest / ".aotwarm.lock", "a")
    except OSError as err:
        raise BadInput(f"cannot write in {dest}: {err.strerror}")
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = _current_generation(dest)
        _remove_leftovers(dest, keep=current)
        new = dest / f"{GEN_PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            result = _assemble(bundle, manifest, dest, current, new, bundle_sha)
            tmp_link = dest / f".aotwarm-link-{uuid.uuid4().hex[:12]}"
            os.symlink(new.name, tmp_link)
            os.replace(tmp_link, dest / "triton")  # the one atomic step that publishes the install
        except (OSError, SinkError) as err:
            shutil.rmtree(new, ignore_errors=True)
            if current is None:  # a first install leaves nothing behind
                (dest / ".aotwarm.lock").unlink(missing_ok=True)
                if created:
                    try:
                        dest.rmdir()
                    except OSError:
                        pass
            raise BadInput(f"cannot write into {dest}: {err.strerror} (disk full or read-only?); nothing was installed")
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        if current is not None:
            shutil.rmtree(current, ignore_errors=True)
    return result


def _assemble(bundle: Path, manifest: dict, dest: Path, current: Path | None, new: Path, bundle_sha: str
              ) -> InstallResult:
    new.mkdir()
    if current is not None:
        _link_tree(current, new)
    ctx = InstallContext(dest=dest, generation=new, cache_dir=dest / "triton", manifest=manifest)

    def write(name: str, data: bytes) -> None:
        kind = kind_of_member(name)  # read_bundle has checked every name against the kinds' rules
        if kind is None:
            raise BadInput(f"bundle member {name!r} belongs to no cache kind: refusing the bundle")
        kind.install_member(ctx, name, data)

    read_bundle(bundle, sink=write)  # pass 2: the same checks again while writing
    for kind in KINDS:
        kind.install_finish(ctx)
    records = new / RECORDS
    records.mkdir(exist_ok=True)
    record = {"bundle": str(bundle.resolve()), "bundle_sha256": bundle_sha, "manifest": manifest}
    (records / f"{bundle_sha}.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    return InstallResult(dest, ctx.cache_dir, ctx.added, ctx.present, ctx.files, bundle_sha, manifest, ctx.notes)


def require_installed(bundle: Path, dest: Path) -> None:
    """BadInput unless ``bundle`` (these exact bytes) is installed in ``dest``."""
    if installed_manifest(dest, sha256_file(Path(bundle))) is None:
        raise BadInput(f"{bundle} is not installed in {dest}: run `aotwarm install {bundle} --dir {dest}` first")


def installed_manifest(dest: Path, bundle_sha: str) -> dict | None:
    try:
        return json.loads((Path(dest) / "triton" / RECORDS / f"{bundle_sha}.json").read_text())["manifest"]
    except (OSError, json.JSONDecodeError, KeyError):
        return None
