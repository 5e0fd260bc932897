"""``aotwarm diff``: every compile a record shows that a bundle does not hold, and why.

A recorded compile is held by the bundle when its cache entry (the compile key) is among the bundle's
files.  For one that is not, the closest key the bundle's plan reached for the same kernel is found
by comparing the two in-memory specialization keys argument by argument (type, divisibility,
constexpr value), and the differing arguments are named: ``stride_istate_seq 139264 vs planned 6144``.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Missing:
    kernel: str
    entry: str
    phase: str
    pid: int | None
    compiled: bool  # the recorded process compiled it (a miss), rather than loading it from its cache
    closest: str | None = None  # "kernel|key" of the closest planned key, if the plan has the kernel
    differences: list[str] = field(default_factory=list)


@dataclass
class DiffReport:
    recorded: int  # distinct recorded compile keys
    held: int
    missing: list[Missing]
    not_triton: list[str]  # DeepGEMM / FlashInfer / CuTe DSL work in the record, which a Triton bundle cannot hold

    def to_dict(self) -> dict:
        return asdict(self)


def _literal(node: ast.AST) -> Any:
    """A key's value: literals as themselves, names such as ``triton.language.bfloat16`` as their text."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    return ast.unparse(node)


def _parse(key: str) -> list | None:
    """The specialization list of an in-memory key ``[('*bf16', 'D'), ('constexpr', 8)]{options}``."""
    head = key[: key.rfind("]") + 1] if "]" in key else key
    try:
        value = _literal(ast.parse(head, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def _describe(arg_names: list[str], mine: list, theirs: list) -> list[str]:
    out = []
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            name = arg_names[i] if i < len(arg_names) else f"arg {i}"
            show = lambda s: s[1] if isinstance(s, tuple) and len(s) == 2 and s[0] == "constexpr" else s  # noqa: E731
            out.append(f"{name} {show(a)} vs planned {show(b)}")
    if len(mine) != len(theirs):
        out.append(f"{len(mine)} specialized arguments vs planned {len(theirs)}")
    return out


def diff(record: dict, manifest: dict) -> DiffReport:
    entries = {f["path"].split("/")[1] for f in manifest["files"] if f["path"].startswith("triton/")
               and f["path"].count("/") == 2}
    planned: dict[str, list[tuple[str, list]]] = {}
    for key in manifest["plan"].get("probe", {}).get("jit_keys", []):
        kernel, _, spec = key.partition("|")
        parsed = _parse(spec)
        if parsed is not None:
            planned.setdefault(kernel, []).append((key, parsed))
    seen: dict[str, dict] = {}
    for event in record["events"]:
        if event["ev"] == "triton_compile":
            seen.setdefault(event["entry"], event)
    missing = []
    for entry, event in seen.items():
        if entry in entries:
            continue
        gap = Missing(event["kernel"], entry, event.get("phase", "run"), event.get("pid"), not event.get("cache_hit"))
        mine = _parse(event.get("jit_key") or "")
        candidates = planned.get(event["kernel"], [])
        if mine is not None and candidates:
            best = min(candidates, key=lambda c: len(_describe([], mine, c[1])))
            gap.closest = best[0]
            gap.differences = _describe(event.get("arg_names") or [], mine, best[1])
        missing.append(gap)
    caches = record.get("caches", {})
    not_triton = [f"DeepGEMM: {p}" for p in caches.get("deepgemm", {}).get("new", [])]
    not_triton += [f"FlashInfer: {p}" for p in caches.get("flashinfer", {}).get("new", [])]
    not_triton += [f"CuTe DSL compile: {e['kernel']}" for e in record["events"] if e["ev"] == "cute_compile"]
    return DiffReport(len(seen), len(seen) - len(missing), sorted(missing, key=lambda m: (m.kernel, m.entry)),
                      not_triton)
