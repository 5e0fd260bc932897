"""GPU profiles and aliases."""

import pytest

from aotwarm.errors import BadInput
from aotwarm.targets import ALIASES, PROFILES, resolve_target


def test_required_profiles_exist_with_device_facts():
    for key in ("h100-sxm", "h100-pcie", "h200", "h20", "h800", "gh200", "a100", "l40s", "b200"):
        p = PROFILES[key]
        assert p.num_sms > 0 and p.smem_optin >= 99 * 1024 and p.total_memory > 0 and p.warp_size == 32
    assert PROFILES["h100-sxm"].name == "NVIDIA H100 80GB HBM3" and PROFILES["h100-sxm"].num_sms == 132
    assert PROFILES["h20"].num_sms == 78 and PROFILES["a100"].capability == (8, 0)


@pytest.mark.parametrize("alias,key", [("sm90", "h100-sxm"), ("sm80", "a100"), ("sm89", "l40s"), ("sm100", "b200")])
def test_aliases_say_which_part(alias, key):
    r = resolve_target(alias)
    assert r.target.key == key and r.via_alias and f"{alias} → {key}" in r.describe()
    assert ALIASES[alias] == key


def test_unknown_target_and_bad_sm_count():
    with pytest.raises(BadInput, match="unknown GPU target 'sm70'"):
        resolve_target("sm70")
    assert resolve_target("h100-sxm", num_sms=100).target.num_sms == 100
    with pytest.raises(BadInput, match="outside 1..132"):
        resolve_target("h100-sxm", num_sms=200)
