"""Every Triton kernel in the installed vLLM's ``v1`` tree, read from its source files (never imported).

A kernel is a function decorated with ``triton.jit`` (bare or called with options; ``triton.autotune`` and
``triton.heuristics`` wrap such a function and add no kernel of their own).  The scan is syntactic (``ast``), so it
sees every kernel of the tree -- also those of modules that cannot be imported on this machine (ROCm, XPU) -- and
it is what the ``vllm-runtime`` family states per plan: nothing in the tree is left out silently.  A ``triton.jit``
function that another one of the tree calls is marked a device helper (inlined into its caller's compile).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TritonKernel:
    path: str  # relative to the vllm package, e.g. "v1/worker/gpu/input_batch.py"
    name: str  # the function's name
    line: int
    helper: bool = False  # called from a triton.jit function of the tree: inlined there, never launched

    @property
    def id(self) -> str:
        return f"{self.path}:{self.name}"


def vllm_root() -> Path | None:
    """The installed vllm package's directory (found without importing it), or None."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _is_triton_jit(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Attribute) and target.attr == "jit" and isinstance(target.value, ast.Name)
            and target.value.id == "triton")


def kernels_in(source: str, path: str) -> tuple[list[TritonKernel], set[str]]:
    """The ``triton.jit`` functions of one source file (nested definitions included), and the names those
    functions call."""
    tree = ast.parse(source, filename=path)
    jitted = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              and any(_is_triton_jit(d) for d in node.decorator_list)]
    called = {_callee(call) for fn in jitted for call in ast.walk(fn) if isinstance(call, ast.Call)}
    return sorted((TritonKernel(path, fn.name, fn.lineno) for fn in jitted), key=lambda k: k.line), called


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def v1_kernels(root: Path | None = None) -> list[TritonKernel]:
    """Every Triton kernel under ``vllm/v1`` of the installed vLLM (``root``: another vllm package directory).
    A function some ``triton.jit`` function of the tree calls is a device helper (Triton inlines it: it compiles
    as part of its caller, never on its own)."""
    root = root or vllm_root()
    if root is None:
        return []
    return list(_scan(root.resolve(), _tree_stamp(root)))


def _tree_stamp(root: Path) -> tuple:
    """What the scan of ``root/v1`` depends on: its files' paths, sizes and modification times."""
    return tuple((str(f), st.st_size, st.st_mtime_ns) for f in sorted((root / "v1").rglob("*.py"))
                 for st in (f.stat(),))


@functools.lru_cache(maxsize=4)
def _scan(root: Path, stamp: tuple) -> tuple[TritonKernel, ...]:
    """The scan itself, once per tree state (a plan made twice in one process reads the tree once)."""
    found: list[TritonKernel] = []
    called: set[str | None] = set()
    for file in sorted((root / "v1").rglob("*.py")):
        text = file.read_text(encoding="utf-8", errors="replace")
        if "triton.jit" in text:
            kernels, calls = kernels_in(text, file.relative_to(root).as_posix())
            found.extend(kernels)
            called |= calls
    return tuple(dataclasses.replace(k, helper=k.name in called) for k in found)
