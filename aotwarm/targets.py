"""GPU profiles: what kernels and engine heuristics read from a device, for GPUs we plan for without one."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import BadInput

MiB = 1024 * 1024


@dataclass(frozen=True)
class Target:
    """An immutable GPU profile.

    ``name`` is exactly what ``torch.cuda.get_device_name()`` returns on that part, because engine
    code matches on it (fla's ``IS_NVIDIA_HOPPER`` looks for ``"NVIDIA H"``; vLLM's tuned MoE
    configs are keyed by it).  ``smem_optin`` is ``sharedMemPerBlockOptin``: Triton reports it as
    ``max_shared_mem`` and fla's ``check_shared_mem`` compares against it.
    """

    key: str
    name: str
    capability: tuple[int, int]
    num_sms: int
    smem_optin: int
    smem_per_block: int
    smem_per_sm: int
    total_memory: int
    l2_cache_size: int
    warp_size: int = 32
    regs_per_block: int = 65536
    max_threads_per_sm: int = 2048
    sm_clock_khz: int = 1980000
    mem_clock_khz: int = 2619000
    mem_bus_width: int = 5120

    @property
    def arch(self) -> int:
        """Triton's integer arch, e.g. 90 for compute capability 9.0."""
        return self.capability[0] * 10 + self.capability[1]

    @property
    def sm_name(self) -> str:
        return f"sm{self.arch}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["capability"] = list(self.capability)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Target":
        d = dict(d)
        d["capability"] = tuple(d["capability"])
        return cls(**d)


def _hopper(key: str, name: str, sms: int, mem_mib: int, l2_mb: int = 50) -> Target:
    return Target(key, name, (9, 0), sms, 232448, 49152, 233472, mem_mib * MiB, l2_mb * MiB)


PROFILES: dict[str, Target] = {
    t.key: t
    for t in (
        _hopper("h100-sxm", "NVIDIA H100 80GB HBM3", 132, 81559),
        _hopper("h100-pcie", "NVIDIA H100 PCIe", 114, 81559),
        _hopper("h200", "NVIDIA H200", 132, 143771, 60),
        _hopper("h20", "NVIDIA H20", 78, 97871, 60),
        _hopper("h800", "NVIDIA H800", 132, 81559),
        _hopper("gh200", "NVIDIA GH200 480GB", 132, 97871, 60),
        Target("a100", "NVIDIA A100-SXM4-80GB", (8, 0), 108, 166912, 49152, 167936, 81153 * MiB, 40 * MiB,
               mem_bus_width=5120, sm_clock_khz=1410000, mem_clock_khz=1593000),
        Target("l40s", "NVIDIA L40S", (8, 9), 142, 101376, 49152, 102400, 46068 * MiB, 96 * MiB,
               max_threads_per_sm=1536, mem_bus_width=384, sm_clock_khz=2520000, mem_clock_khz=9001000),
        Target("b200", "NVIDIA B200", (10, 0), 148, 232448, 49152, 233472, 183359 * MiB, 126 * MiB,
               mem_bus_width=8192, sm_clock_khz=1965000, mem_clock_khz=3996000),
    )
}

ALIASES: dict[str, str] = {"sm90": "h100-sxm", "sm80": "a100", "sm89": "l40s", "sm100": "b200"}


@dataclass(frozen=True)
class ResolvedTarget:
    target: Target
    requested: str
    via_alias: bool

    def describe(self) -> str:
        if self.via_alias:
            return f"{self.requested} → {self.target.key} ({self.target.name}, {self.target.num_sms} SMs)"
        return f"{self.target.key} ({self.target.name}, {self.target.num_sms} SMs)"


def resolve_target(name: str, num_sms: int | None = None) -> ResolvedTarget:
    """Resolve a profile key or arch alias; ``num_sms`` plans for a reduced SM count."""
    key = name.strip().lower()
    via_alias = key in ALIASES
    key = ALIASES.get(key, key)
    if key not in PROFILES:
        known = ", ".join(sorted(PROFILES) + sorted(ALIASES))
        raise BadInput(f"unknown GPU target {name!r}: use one of {known} (see `aotwarm targets`)")
    target = PROFILES[key]
    if num_sms is not None:
        if not 1 <= num_sms <= target.num_sms:
            raise BadInput(f"--num-sms {num_sms} is outside 1..{target.num_sms} for {target.key}")
        from dataclasses import replace
        target = replace(target, num_sms=num_sms)
    return ResolvedTarget(target, name, via_alias)
