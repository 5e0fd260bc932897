"""Work items and the Plan: the lock file of a build (stable JSON with a content hash)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import BadInput

PLAN_FORMAT = 1


@dataclass(frozen=True)
class ServingArgs:
    """The serving setup the plan is for.

    For vLLM every value is what vLLM itself resolved (``serving.for_vllm``), and ``vllm`` holds its
    whole answer (``engines.vllm_resolve``: resolved config, layer facts, state layouts)."""

    engine: str = "auto"
    tp: int = 1
    dtype: str | None = None  # None: the model's dtype
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    max_prefill_batch: int = 1
    families: tuple[str, ...] = ("gdn",)
    # vLLM serving settings (ignored by engines that do not have them)
    mamba_ssm_cache_dtype: str = "auto"
    mamba_cache_dtype: str = "auto"
    num_speculative_tokens: int = 0
    max_cudagraph_capture_size: int | None = None  # None: vLLM's own rule for the target
    enforce_eager: bool = False
    gdn_prefill_backend: str = "auto"
    ep: int = 1  # expert-parallel size: experts split across ranks, intermediate size not sharded
    moe_backend: str = "auto"
    deep_gemm_e8m0: bool = True  # vLLM's VLLM_USE_DEEP_GEMM_E8M0 (UE8M0 scales): the build runs DeepGEMM with it
    vllm_args: tuple[str, ...] = ()  # the vllm serve arguments the plan was resolved for
    # request features the vllm-runtime family covers (engines.vllm_runner.REQUEST_FEATURES; None: all of them)
    request_features: tuple[str, ...] | None = None
    vllm: dict = field(default_factory=dict)  # vLLM's own decisions for them (engines.vllm_resolve)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["families"] = list(self.families)
        d["vllm_args"] = list(self.vllm_args)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ServingArgs":
        d = dict(d)
        d.pop("cuda_runtime_major", None)  # plans of aotwarm < 0.2 (vLLM decides it now)
        features = d.get("request_features")
        return cls(**{**d, "families": tuple(d.get("families", ())), "vllm_args": tuple(d.get("vllm_args", ())),
                      "request_features": tuple(features) if features is not None else None})


@dataclass
class WorkItem:
    """One call of an engine op with concrete parameters, and why it is in the plan."""

    id: str
    family: str
    op: str
    params: dict[str, Any]
    reason: str
    # filled by the probe: kernel name -> list of {"key": autotune key or None, "configs": n}
    kernels: dict[str, list[dict]] = field(default_factory=dict)
    jit_keys: int = 0
    # True: a JIT that needs a GPU of the target kind (DeepGEMM); built and verified on one, never probed
    needs_gpu: bool = False
    # the cache kind that builds, ships and verifies it (``aotwarm.kinds``): triton, deepgemm, flashinfer
    kind: str = "triton"

    def __post_init__(self) -> None:
        if self.needs_gpu and self.kind == "triton":  # plans written before items named their kind
            self.kind = "deepgemm"


@dataclass
class KernelCoverage:
    """What a planner states about one kernel: the range it covers and the classes it enumerated."""

    kernel: str
    covers: str
    classes: list[str]


@dataclass
class FamilyCoverage:
    family: str
    status: str  # "planned" | "not-applicable" | "not-covered" | "stated" (engine-layers: statements only)
    summary: str
    kernels: list[KernelCoverage] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)  # what this family's kernels need that the bundle lacks


@dataclass
class Plan:
    model: dict
    target: dict
    target_requested: str
    engine: dict
    serving: dict
    families: list[FamilyCoverage]
    items: list[WorkItem]
    probe: dict = field(default_factory=dict)  # {"jit_keys": [...sorted in-memory keys...], "autotune_keys": n}
    sm_count_sensitive: bool = False  # does any planned kernel's key depend on the SM count?
    format: int = PLAN_FORMAT
    aotwarm_version: str = __version__

    def items_of(self, kind: str) -> list[WorkItem]:
        """The items one cache kind builds, ships and verifies."""
        return [i for i in self.items if i.kind == kind]

    @property
    def triton_items(self) -> list[WorkItem]:
        """Items compiled under the virtual target GPU (probe, GPU-less build, Triton verify)."""
        return self.items_of("triton")

    @property
    def gpu_items(self) -> list[WorkItem]:
        """Items whose JIT needs a GPU of the target kind (DeepGEMM)."""
        return [i for i in self.items if i.needs_gpu]

    def body(self) -> dict:
        d = asdict(self)
        return d

    @property
    def hash(self) -> str:
        return plan_hash(self.body())

    def to_json(self) -> str:
        d = self.body()
        d["hash"] = plan_hash(d)
        return json.dumps(d, indent=1, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        from .fsutil import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        d = dict(d)
        stored = d.pop("hash", None)
        if d.get("format") != PLAN_FORMAT:
            raise BadInput(f"plan format {d.get('format')!r} is not {PLAN_FORMAT}: re-run `aotwarm plan` with this aotwarm")
        try:
            plan = cls(
                model=d["model"], target=d["target"], target_requested=d["target_requested"], engine=d["engine"],
                serving=d["serving"],
                families=[FamilyCoverage(**{**f, "kernels": [KernelCoverage(**k) for k in f["kernels"]]}) for f in d["families"]],
                items=[WorkItem(**i) for i in d["items"]], probe=d.get("probe", {}), format=d["format"],
                sm_count_sensitive=d.get("sm_count_sensitive", False),
                aotwarm_version=d["aotwarm_version"],
            )
        except (KeyError, TypeError) as err:
            raise BadInput(f"plan file is not an aotwarm plan ({err}): re-run `aotwarm plan -o plan.json`")
        if stored is not None and stored != plan.hash:
            raise BadInput("plan file was edited after it was written (its hash does not match): re-run `aotwarm plan`")
        return plan

    @classmethod
    def read(cls, path: Path) -> "Plan":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except OSError as err:
            raise BadInput(f"cannot read plan {path}: {err.strerror}")
        except json.JSONDecodeError as err:
            raise BadInput(f"plan {path} is not valid JSON ({err.msg} at line {err.lineno})")


def plan_hash(body: dict) -> str:
    """sha256 of the canonical JSON of a plan body (the ``hash`` field itself excluded)."""
    body = {k: v for k, v in body.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
