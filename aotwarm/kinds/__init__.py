"""Cache kinds: one module per JIT cache a serving node reads, all with the interface of ``base.CacheKind``.

``KINDS`` is the registry the bundle reader, build, install and verify iterate over; ``SIDE_KINDS`` are
the kinds built beside Triton (their build and verify are whole hooks; Triton's are ``build.py``'s and
``verify.py``'s core).
"""

from __future__ import annotations

from types import ModuleType

from . import deepgemm, flashinfer, triton
from .base import BuildContext, InstallContext, Mismatch, merge_env

KINDS: tuple[ModuleType, ...] = (triton, deepgemm, flashinfer)
SIDE_KINDS: tuple[ModuleType, ...] = (deepgemm, flashinfer)

__all__ = ["KINDS", "SIDE_KINDS", "BuildContext", "InstallContext", "Mismatch", "kind_of_member", "engine_env",
           "merge_env"]


def kind_of_member(name: str) -> ModuleType | None:
    """The kind whose member-name rule accepts ``name`` (None: no kind does)."""
    return next((k for k in KINDS if name.startswith(k.PREFIX) and k.member_ok(name)), None)


def engine_env(cache_dir, manifest: dict | None) -> dict[str, str]:
    """Every kind's environment for the engine, for an install whose stable path is ``cache_dir``."""
    env: dict[str, str] = {}
    for kind in KINDS:
        env.update(kind.engine_env(cache_dir, manifest or {}))
    return env
