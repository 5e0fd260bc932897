"""Host-side launchers, prebuilt on the builder so a serving node needs no C compiler.

Triton 3.6 compiles two kinds of C extension on first use, with the node's C compiler:
``cuda_utils`` (once) and ``__triton_launcher`` (one per kernel *signature*; kernels with the same
signature share it). Both are cached under ``sha256(C source + platform)``, a key with no path in
it, and looked up by file name, so a prebuilt copy in the bundle is found on the node.

Building needs a C compiler, the Python headers of the serving ABI (the builder runs the same
Python), and a ``libcuda.so.1`` to link against. Without a GPU driver an empty stub library is
enough: the launcher only records ``libcuda.so.1`` as a dependency and the node's driver provides
the symbols at load time.

The compiler is called through a small wrapper (``compiler_wrapper``) that (1) links with
``--no-as-needed``, so the dependency on ``libcuda.so.1`` is kept even against the empty stub
(otherwise the node's loader would find the driver's symbols missing and Triton would rebuild the
launcher with a compiler), and (2) compiles the C file by its base name from its own directory,
so Triton's random temporary path does not end up in the binary and builds are byte-identical.
The C source, and so Triton's cache key, is exactly what the node would generate.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class LaunchersUnavailable(Exception):
    """The builder lacks what prebuilding launchers needs; the message says what."""


def builder_problem() -> str | None:
    """Why launchers cannot be built here, or None."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return "no C compiler on the builder (set CC or install gcc)"
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").is_file():
        return f"no Python headers for this interpreter ({include}/Python.h missing: install python3-dev)"
    return None


def _ldconfig_has_libcuda() -> bool:
    try:
        out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libcuda.so.1" in out


def libcuda_dir(work_dir: Path) -> str | None:
    """A directory holding a ``libcuda.so.1`` to link against (None: Triton finds the driver's own).

    On a GPU-less builder an empty stub is compiled into ``work_dir``.
    """
    if os.environ.get("TRITON_LIBCUDA_PATH"):
        return os.environ["TRITON_LIBCUDA_PATH"]
    if _ldconfig_has_libcuda():
        return None
    stub_dir = work_dir / "libcuda-stub"
    stub = stub_dir / "libcuda.so.1"
    if not stub.exists():
        stub_dir.mkdir(parents=True, exist_ok=True)
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
        src = stub_dir / "stub.c"
        src.write_text("/* empty: the launcher only needs libcuda.so.1 as a dependency name */\n")
        try:
            subprocess.run([cc, "-shared", "-fPIC", "-o", str(stub), str(src)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as err:
            raise LaunchersUnavailable(f"cannot build a libcuda.so.1 stub with {cc}: {err}")
    return str(stub_dir)


def compiler_wrapper(work_dir: Path) -> str:
    """Write the reproducible compiler wrapper (see the module docstring); returns its path."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    wrapper = work_dir / "aotwarm-cc"
    text = ("#!/bin/sh\n"
            "# aotwarm: build Triton launchers reproducibly, keeping libcuda.so.1 as a dependency\n"
            'src="$1"; shift\n'
            f'cd "$(dirname "$src")" && exec {cc} -Wl,--no-as-needed "$(basename "$src")" "$@"\n')
    work_dir.mkdir(parents=True, exist_ok=True)
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
        wrapper.chmod(0o755)
    return str(wrapper)


@dataclass
class LauncherBuilder:
    """Builds (and caches into TRITON_CACHE_DIR) the launcher of every kernel it is shown."""

    built: dict[str, str]  # launcher source sha256 -> cache entry name

    @classmethod
    def create(cls) -> "LauncherBuilder":
        return cls({})

    @staticmethod
    def _entry(src: str) -> str:
        from triton.runtime.build import platform_key
        from triton.runtime.cache import _base32

        return _base32(hashlib.sha256((src + platform_key()).encode("utf-8")).hexdigest())

    def _compile(self, src: str, name: str) -> str:
        from triton.backends.nvidia import driver as nvidia_driver
        from triton.runtime.build import compile_module_from_src

        from triton.runtime.build import platform_key
        from triton.runtime.cache import get_cache_manager

        digest = hashlib.sha256(src.encode()).hexdigest()
        if digest in self.built:
            return self.built[digest]
        key = hashlib.sha256((src + platform_key()).encode("utf-8")).hexdigest()
        if get_cache_manager(key).get_file(f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}") is not None:
            self.built[digest] = self._entry(src)  # already built (a resumed build, or another worker)
            return self.built[digest]
        try:
            compile_module_from_src(src=src, name=name, library_dirs=nvidia_driver.library_dirs(),
                                    include_dirs=nvidia_driver.include_dirs, libraries=nvidia_driver.libraries)
        except (ImportError, RuntimeError, OSError) as err:
            # Loading a launcher linked against the stub fails (no driver symbols); it is cached already.
            if "undefined symbol" not in str(err) and "libcuda" not in str(err):
                raise
        self.built[digest] = self._entry(src)
        return self.built[digest]

    def cuda_utils(self) -> str:
        from triton.backends.nvidia import driver as nvidia_driver

        return self._compile(Path(nvidia_driver.dirname, "driver.c").read_text(), "cuda_utils")

    def launcher(self, src: Any, metadata: dict) -> str:
        """The launcher ``CudaLauncher(src, metadata)`` would build on first launch."""
        from triton.backends.nvidia.driver import make_launcher

        constants = src.constants if hasattr(src, "constants") else {}
        arg_idx = lambda x: (src.fn.arg_names.index(x),) if isinstance(x, str) else x  # noqa: E731
        constants = {arg_idx(idx): value for idx, value in constants.items()}
        signature = dict(src.signature.items())
        return self._compile(make_launcher(constants, signature, metadata.get("tensordesc_meta")), "__triton_launcher")
