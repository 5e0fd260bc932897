"""The interface every cache kind implements (Triton, DeepGEMM, FlashInfer), and the records they share.

A *cache kind* is one JIT cache a serving node reads: Triton's cache directory, DeepGEMM's
``DG_JIT_CACHE_DIR``, FlashInfer's AOT modules.  Each is one module of ``aotwarm.kinds`` with the
members of ``CacheKind`` below; ``build.py``, ``bundle.py``, ``install.py`` and ``verify.py`` go through
``aotwarm.kinds.KINDS`` and know no kind by name (Triton, whose cache directory *is* the installed
generation the others live in, is also the core of the build and the verify replay).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..plan import Plan


@dataclass(frozen=True)
class Mismatch:
    """One reason a bundle cannot hit on a node: what the bundle has, what the node has, what to do."""

    field: str
    bundle: str
    node: str
    hint: str

    def line(self) -> str:
        return f"{self.field}: bundle has {self.bundle}, this node has {self.node} ({self.hint})"


@dataclass
class AddedBundle:
    """``build --add BUNDLE``: another bundle, already read and checked by ``bundle.read_bundle``."""

    path: Path
    manifest: dict
    files: dict[str, bytes]  # every member, by name


@dataclass
class BuildContext:
    """What a kind's build step gets from ``build.py``."""

    plan: "Plan"
    work_dir: Path  # the build's work directory (survives the run: re-runs resume)
    jobs: int
    timeout: float
    add_from: dict[str, AddedBundle] = field(default_factory=dict)  # kind name -> a bundle to take that part from


@dataclass
class InstallContext:
    """State of one install, handed to every kind's install hooks (the generation is not published yet)."""

    dest: Path  # the install directory (DIR)
    generation: Path  # the new generation being assembled: DIR/.aotwarm-gen-<id>
    cache_dir: Path  # DIR/triton: the stable path the engine is given (a symlink to the published generation)
    manifest: dict
    notes: list[str] = field(default_factory=list)  # what was not installed as shipped, and why
    files: int = 0  # files written
    added: int = 0  # cache entries new to this install
    present: int = 0  # cache entries the install already had, byte for byte
    state: dict = field(default_factory=dict)  # per-kind scratch space, keyed by kind name


class CacheKind(Protocol):
    """The members of a cache-kind module."""

    NAME: str  # WorkItem.kind and the manifest section holding this kind's build record
    LABEL: str  # how output names this kind's files ("DeepGEMM kernels")
    PREFIX: str  # bundle member prefix: every member of this kind starts with it
    INSTALL_SUBDIR: str  # where its files go inside an installed generation ("" for Triton's entries)

    def member_ok(self, name: str) -> bool:
        """Bundle member-name rule: True when ``name`` is a well-formed member of this kind."""

    def shipped(self, manifest: dict) -> bool:
        """Whether the bundle carries a built part of this kind (its section says so)."""

    def build_section(self, ctx: BuildContext) -> tuple[dict, dict[str, bytes]]:
        """Build the plan's items of this kind (or take them from ``ctx.add_from``, or record why not):
        the manifest section ({"status": built | not-built | failed | none, ...}) and the bundle members."""

    def install_member(self, ctx: InstallContext, name: str, data: bytes) -> None:
        """Write one verified member into ``ctx.generation``."""

    def install_finish(self, ctx: InstallContext) -> None:
        """After every member is written: anything the engine needs beside the files."""

    def engine_env(self, cache_dir: Path, manifest: dict) -> dict[str, str]:
        """Environment the serving engine needs to read this kind from an install at ``cache_dir``."""

    def mismatches(self, manifest: dict, gpu: dict | None) -> list[Mismatch]:
        """Why this kind's part cannot hit here (empty: it can); ``gpu`` holds the node's GPU facts, if known."""

    def verify_section(self, plan: "Plan", manifest: dict, cache_dir: Path, timeout: float) -> dict:
        """Use the installed part as the engine does and count what was not served from it."""

    def verify_failures(self, report: dict) -> list[str]:
        """What in this kind's verify report fails the verify (empty: passed)."""


def write_fresh(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` in a generation being assembled, never through a hard link to the current one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def target_gpu_problem(target: dict, exact_sms: bool) -> str | None:
    """Why a JIT that needs a GPU of the target kind cannot run here (None: one is visible).  ``exact_sms``:
    the kernels' choice depends on the SM count the GPU reports, so it must equal the target's."""
    try:
        import torch
    except ImportError:
        return "torch is not importable"
    if not torch.cuda.is_available():
        return "no GPU is visible on this builder"
    name, cap = torch.cuda.get_device_name(0), list(torch.cuda.get_device_capability(0))
    if cap != list(target["capability"]):
        return f"this GPU is {name} (sm{cap[0]}{cap[1]}), the target is {target['name']}"
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    if sms < target["num_sms"] or (exact_sms and sms != target["num_sms"]):
        return f"this GPU has {sms} SMs, the plan is for {target['num_sms']}"
    return None


# variables the engine environment extends rather than replaces (a search path the node already relies on)
PATH_LIKE = ("PYTHONPATH",)


def merge_env(base: Mapping[str, str], engine: Mapping[str, str]) -> dict[str, str]:
    """``base`` with an install's engine environment applied: path-like variables are put in front of what
    ``base`` has (the node's own PYTHONPATH keeps working), the others replace it."""
    out = {**base, **engine}
    for var in PATH_LIKE:
        if var in engine and base.get(var):
            out[var] = os.pathsep.join([engine[var], base[var]])
    return out
