"""ModelSpec: a typed, normalized view of a Hugging Face ``config.json``, and where it came from.

A model is given as a local ``config.json``, a local model directory, or a hub repo id.  Repo ids
are fetched through ``huggingface_hub`` (its cache and ``HF_HUB_OFFLINE`` are honoured).  The
configs of the models this project targets ship inside the package and are used only when the hub
cannot be reached; the returned ``ModelSource`` says so.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import BadInput

# model_type of the text model -> family of layer layout it uses
GDN_MODEL_TYPES = {"qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_next"}
DENSE_OR_MOE_TYPES = {"qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "gpt_oss", "llama", "mistral",
                      "deepseek_v3"}  # DeepSeek-V3 / Kimi-K2-style (MLA + MoE): planned from vLLM's own layers
KNOWN_MODEL_TYPES = GDN_MODEL_TYPES | DENSE_OR_MOE_TYPES

_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32", "half": "float16",
           "bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "float": "float32"}


@dataclass(frozen=True)
class GdnDims:
    """Gated DeltaNet layer dimensions (global, before tensor parallelism)."""

    num_k_heads: int
    num_v_heads: int
    head_k_dim: int
    head_v_dim: int
    conv_kernel: int

    def local(self, tp: int) -> "GdnDims":
        """The TP-local dims; both head counts must divide by ``tp``."""
        for what, n in (("linear_num_key_heads", self.num_k_heads), ("linear_num_value_heads", self.num_v_heads)):
            if n % tp:
                raise BadInput(f"--tp {tp} does not divide {what}={n}: pick a tensor-parallel size that divides it")
        return GdnDims(self.num_k_heads // tp, self.num_v_heads // tp, self.head_k_dim, self.head_v_dim, self.conv_kernel)


@dataclass(frozen=True)
class AttentionDims:
    """Full-attention projection dimensions (global, before tensor parallelism)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class ModelSource:
    """Where the config came from, and its content hash."""

    model: str
    kind: str  # "file" | "directory" | "hub" | "bundled"
    path: str
    sha256: str
    note: str = ""


@dataclass(frozen=True)
class ModelSpec:
    architectures: tuple[str, ...]
    model_type: str
    text_model_type: str
    hidden_size: int
    num_layers: int
    layer_types: tuple[str, ...]
    dtype: str
    hidden_act: str
    rms_norm_eps: float
    gdn: GdnDims | None
    mamba_ssm_dtype: str | None
    num_experts: int | None = None
    num_experts_per_tok: int | None = None
    moe_intermediate_size: int | None = None
    shared_expert_intermediate_size: int | None = None
    quantization: dict = field(default_factory=dict)
    gdn_output_gate: str = "silu"  # vLLM: config.output_gate_type (swish == silu), the RMSNormGated activation
    attention: AttentionDims | None = None
    intermediate_size: int | None = None  # dense MLP width
    mlp_only_layers: tuple[int, ...] = ()  # MoE models: layers with a dense MLP instead of experts
    decoder_sparse_step: int = 1  # MoE models: every n-th layer has experts
    weights: dict | None = None  # checkpoint facts from safetensors headers (aotwarm.checkpoint), when read

    @property
    def num_gdn_layers(self) -> int:
        return sum(1 for t in self.layer_types if t == "linear_attention")

    def to_dict(self) -> dict:
        return asdict(self)


def _require(cfg: dict, key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise BadInput(f"config is missing field {key!r} ({where}); is this the model's own config.json?")
    return cfg[key]


def _dtype(cfg: dict, top: dict) -> str:
    raw = cfg.get("dtype") or cfg.get("torch_dtype") or top.get("dtype") or top.get("torch_dtype") or "bfloat16"
    raw = str(raw).replace("torch.", "")
    if raw not in _DTYPES:
        raise BadInput(f"config dtype {raw!r} is not one of {sorted(set(_DTYPES.values()))}")
    return _DTYPES[raw]


def _layer_types(cfg: dict, text_type: str, n_layers: int) -> tuple[str, ...]:
    if text_type not in GDN_MODEL_TYPES:
        return tuple(cfg.get("layer_types") or ["full_attention"] * n_layers)
    types = cfg.get("layer_types")
    if types:
        if len(types) != n_layers:
            raise BadInput(f"config layer_types has {len(types)} entries but num_hidden_layers is {n_layers}")
        return tuple(types)
    interval = cfg.get("full_attention_interval")
    if not interval:
        raise BadInput(f"config for {text_type} has neither 'layer_types' nor 'full_attention_interval'")
    # Qwen3-Next: layer i is full attention iff (i + 1) % interval == 0
    return tuple("full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n_layers))


def spec_from_config(config: dict) -> ModelSpec:
    """Normalize a parsed config.json into a ModelSpec (raises BadInput naming what is wrong)."""
    if not isinstance(config, dict):
        raise BadInput("config.json does not hold a JSON object")
    top = config
    text = config.get("text_config") or config
    model_type = top.get("model_type") or text.get("model_type")
    text_type = text.get("model_type") or model_type
    if not model_type:
        raise BadInput("config has no 'model_type': is this a Hugging Face config.json?")
    if text_type not in KNOWN_MODEL_TYPES:
        raise BadInput(f"unsupported architecture model_type={text_type!r} "
                       f"({', '.join(top.get('architectures') or [])}): aotwarm knows {', '.join(sorted(KNOWN_MODEL_TYPES))}")
    n_layers = int(_require(text, "num_hidden_layers", text_type))
    layer_types = _layer_types(text, text_type, n_layers)
    gdn = None
    if text_type in GDN_MODEL_TYPES:
        gdn = GdnDims(
            num_k_heads=int(_require(text, "linear_num_key_heads", text_type)),
            num_v_heads=int(_require(text, "linear_num_value_heads", text_type)),
            head_k_dim=int(_require(text, "linear_key_head_dim", text_type)),
            head_v_dim=int(_require(text, "linear_value_head_dim", text_type)),
            conv_kernel=int(_require(text, "linear_conv_kernel_dim", text_type)),
        )
        if gdn.num_v_heads % gdn.num_k_heads:
            raise BadInput(f"linear_num_value_heads={gdn.num_v_heads} is not a multiple of linear_num_key_heads={gdn.num_k_heads}")
    quant = dict(top.get("quantization_config") or text.get("quantization_config") or {})
    attention = None
    if text.get("num_attention_heads"):
        heads = int(text["num_attention_heads"])
        attention = AttentionDims(num_heads=heads, num_kv_heads=int(text.get("num_key_value_heads") or heads),
                                  head_dim=int(text.get("head_dim") or int(text["hidden_size"]) // heads))
    return ModelSpec(
        architectures=tuple(top.get("architectures") or ()),
        model_type=model_type,
        text_model_type=text_type,
        hidden_size=int(_require(text, "hidden_size", text_type)),
        num_layers=n_layers,
        layer_types=layer_types,
        dtype=_dtype(text, top),
        hidden_act=str(text.get("hidden_act", "silu")),
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
        gdn=gdn,
        mamba_ssm_dtype=text.get("mamba_ssm_dtype"),
        gdn_output_gate={"swish": "silu"}.get(str(text.get("output_gate_type", "silu")), str(text.get("output_gate_type", "silu"))),
        num_experts=text.get("num_experts") or text.get("num_local_experts") or text.get("n_routed_experts"),
        num_experts_per_tok=text.get("num_experts_per_tok"),
        moe_intermediate_size=text.get("moe_intermediate_size"),
        shared_expert_intermediate_size=text.get("shared_expert_intermediate_size"),
        quantization=quant,
        attention=attention,
        intermediate_size=text.get("intermediate_size"),
        mlp_only_layers=tuple(int(i) for i in text.get("mlp_only_layers") or ()),
        decoder_sparse_step=int(text.get("decoder_sparse_step") or 1),
    )


# -- loading ---------------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def bundled_config_names() -> list[str]:
    """Repo ids whose config ships inside the package (offline fallback only)."""
    folder = resources.files("aotwarm") / "configs"
    return sorted(p.name[:-5].replace("--", "/", 1) for p in folder.iterdir() if p.name.endswith(".json"))


def _bundled_config_text(repo_id: str) -> str | None:
    path = resources.files("aotwarm") / "configs" / (repo_id.replace("/", "--", 1) + ".json")
    return path.read_text() if path.is_file() else None


def _parse(text: str, where: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInput(f"{where} is not valid JSON ({err.msg} at line {err.lineno}): re-download the model's config.json")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_local(path: Path, model: str) -> tuple[dict, ModelSource]:
    kind = "directory" if path.is_dir() else "file"
    cfg_path = path / "config.json" if path.is_dir() else path
    if not cfg_path.is_file():
        raise BadInput(f"{model}: no config.json in that directory")
    try:
        text = cfg_path.read_text()
    except OSError as err:
        raise BadInput(f"cannot read {cfg_path}: {err.strerror}")
    return _parse(text, str(cfg_path)), ModelSource(model, kind, str(cfg_path.resolve()), _sha(text))


def _hub_reachable(timeout: float = 3.0) -> bool:
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", constants.ENDPOINT))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
        return True
    except OSError:
        return False


def _bundled_fallback(repo_id: str, err: Exception) -> tuple[dict, ModelSource]:
    text = _bundled_config_text(repo_id)
    if text is None:
        raise BadInput(f"{repo_id}: the Hugging Face hub cannot be reached ({type(err).__name__}) and no copy is "
                       f"cached or bundled; pass a local config.json or model directory instead")
    note = f"hub unreachable ({type(err).__name__}); using the config bundled with aotwarm for {repo_id}"
    source = ModelSource(repo_id, "bundled", f"aotwarm/configs/{repo_id.replace('/', '--', 1)}.json", _sha(text), note)
    return _parse(text, f"bundled config of {repo_id}"), source


def _read_hub(repo_id: str) -> tuple[dict, ModelSource]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    # huggingface_hub retries a dead network for ~25 s; one short connection attempt tells us sooner.
    offline = not _hub_reachable()
    try:
        path = hf_hub_download(repo_id, "config.json", local_files_only=offline)
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise BadInput(f"{repo_id}: not found or not accessible on the Hugging Face hub "
                       f"({type(err).__name__}); check the repo id or log in with `hf auth login`")
    except EntryNotFoundError as err:
        if isinstance(err, LocalEntryNotFoundError):  # offline, or the hub could not be reached
            return _bundled_fallback(repo_id, err)
        raise BadInput(f"{repo_id}: the repo has no config.json")
    except Exception as err:  # network down, proxy errors, timeouts
        return _bundled_fallback(repo_id, err)
    text = Path(path).read_text()
    return _parse(text, path), ModelSource(repo_id, "hub", path, _sha(text))


def load_config(model: str) -> tuple[dict, ModelSource]:
    """Return the parsed config.json for MODEL (path, directory or repo id) and its source."""
    path = Path(model).expanduser()
    if path.exists():
        return _read_local(path, model)
    if model.endswith(".json") or model.startswith((".", "/", "~")) or not _REPO_ID.match(model):
        raise BadInput(f"{model}: no such file or directory, and not a Hugging Face repo id (owner/name)")
    return _read_hub(model)


def load_model(model: str) -> tuple[ModelSpec, ModelSource]:
    config, source = load_config(model)
    return spec_from_config(config), source
