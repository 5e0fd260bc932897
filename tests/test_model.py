"""ModelSpec loading and normalization (no engine, no GPU)."""

import json

import pytest

from aotwarm.errors import BadInput
from aotwarm.model import GdnDims, bundled_config_names, load_model, spec_from_config
from tests.conftest import QWEN35_9B, QWEN35_35B


def test_qwen35_9b_text_config_nesting_and_gdn_dims():
    spec, src = load_model(str(QWEN35_9B))
    assert src.kind == "file" and len(src.sha256) == 64
    assert spec.model_type == "qwen3_5" and spec.text_model_type == "qwen3_5_text"
    assert spec.gdn == GdnDims(16, 32, 128, 128, 4)
    assert spec.num_layers == 32 and spec.num_gdn_layers == 24  # every 4th layer is full attention
    assert spec.dtype == "bfloat16" and spec.hidden_act == "silu"


def test_qwen35_35b_moe_fields():
    spec, _ = load_model(str(QWEN35_35B))
    assert spec.gdn.num_v_heads == 32 and spec.num_gdn_layers == 30
    assert spec.num_experts == 256 and spec.num_experts_per_tok == 8


def test_directory_input(tmp_path):
    (tmp_path / "config.json").write_text(QWEN35_9B.read_text())
    spec, src = load_model(str(tmp_path))
    assert src.kind == "directory" and spec.gdn is not None


def test_full_attention_interval_when_no_layer_types():
    cfg = json.loads(QWEN35_9B.read_text())["text_config"]
    cfg.pop("layer_types")
    cfg["model_type"] = "qwen3_next"
    spec = spec_from_config(cfg)
    assert spec.layer_types[:4] == ("linear_attention",) * 3 + ("full_attention",)
    assert spec.num_gdn_layers == 24


def test_tp_local_dims_and_bad_tp():
    gdn = GdnDims(16, 32, 128, 128, 4)
    assert gdn.local(2) == GdnDims(8, 16, 128, 128, 4)
    with pytest.raises(BadInput, match="--tp 3 does not divide linear_num_key_heads=16"):
        gdn.local(3)


@pytest.mark.parametrize("field", ["linear_num_value_heads", "linear_key_head_dim", "num_hidden_layers"])
def test_missing_field_is_named(field):
    cfg = json.loads(QWEN35_9B.read_text())
    del cfg["text_config"][field]
    with pytest.raises(BadInput, match=f"missing field '{field}'"):
        spec_from_config(cfg)


def test_unknown_architecture_is_named():
    with pytest.raises(BadInput, match="unsupported architecture model_type='falcon'"):
        spec_from_config({"model_type": "falcon", "architectures": ["FalconForCausalLM"]})


def test_invalid_json_and_missing_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        load_model(str(bad))
    with pytest.raises(BadInput, match="no such file"):
        load_model(str(tmp_path / "nope.json"))
    with pytest.raises(BadInput, match="no config.json"):
        (tmp_path / "empty").mkdir()
        load_model(str(tmp_path / "empty"))


def test_offline_hub_falls_back_to_bundled_config_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    spec, src = load_model("Qwen/Qwen3.5-9B")
    assert src.kind == "bundled" and "using the config bundled" in src.note
    assert spec.gdn.num_v_heads == 32
    with pytest.raises(BadInput, match="cannot be reached.*no copy is cached or bundled"):
        load_model("SomeOrg/unknown-model")


def test_bundled_configs_cover_the_fixture_models():
    names = bundled_config_names()
    assert {"Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-35B-A3B", "Qwen/Qwen3-30B-A3B-FP8"} <= set(names)
