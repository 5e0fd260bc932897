"""The identity of this environment as far as Triton's cache keys are concerned.

Recorded in every bundle's manifest and compared by install/verify: Python ABI (``libtriton.so``
differs per CPython minor, so the key does too), Triton version and ``triton_key()`` hash, the
compiler backend hash for the target arch (the full ``ptxas --version`` text), torch, and every
environment variable that enters a cache key.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import sysconfig
from dataclasses import asdict, dataclass, field

# Not in Triton's C++ list but still change a key (through options) or break reuse of a bundle.
EXTRA_KEY_ENV = ("PTXAS_OPTIONS", "TRITON_DEBUG", "TRITON_INSTRUMENTATION_MODE", "TRITON_PTXAS_PATH",
                 "TRITON_PTXAS_BLACKWELL_PATH", "TRITON_LIBDEVICE_PATH", "TRITON_MOCK_PTX_VERSION",
                 "TRITON_ALWAYS_COMPILE", "TRITON_INTERPRET", "TRITON_KERNEL_OVERRIDE", "TRITON_F32_DEFAULT")


@dataclass(frozen=True)
class Fingerprint:
    python_version: str
    python_abi: str  # e.g. cpython-312-x86_64-linux-gnu (EXT_SUFFIX without the dot and .so)
    platform: str
    triton_version: str
    triton_key_sha256: str
    torch_version: str
    key_env: dict[str, str] = field(default_factory=dict)
    backend_hash_sha256: dict[str, str] = field(default_factory=dict)  # arch -> sha256(backend.hash())

    def to_dict(self) -> dict:
        return asdict(self)


def python_abi() -> str:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ""
    return suffix.strip(".").removesuffix(".so").removesuffix(".pyd") or sys.implementation.cache_tag


def key_env() -> dict[str, str]:
    """Env vars that enter Triton cache keys, as Triton normalizes them (set and non-empty only)."""
    from triton._C.libtriton import get_cache_invalidating_env_vars

    env = dict(get_cache_invalidating_env_vars())
    for name in EXTRA_KEY_ENV:
        if os.environ.get(name):
            env[name] = os.environ[name]
    return dict(sorted(env.items()))


def backend_hash(arch: int) -> str:
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    return hashlib.sha256(make_backend(GPUTarget("cuda", arch, 32)).hash().encode()).hexdigest()


def fingerprint(arch: int | None = None) -> Fingerprint:
    import torch
    import triton
    from triton.runtime.cache import triton_key

    hashes = {str(arch): backend_hash(arch)} if arch is not None else {}
    return Fingerprint(
        python_version=platform.python_version(),
        python_abi=python_abi(),
        platform=f"{platform.system()}-{platform.machine()}",
        triton_version=triton.__version__,
        triton_key_sha256=hashlib.sha256(triton_key().encode()).hexdigest(),
        torch_version=torch.__version__,
        key_env=key_env(),
        backend_hash_sha256=hashes,
    )
