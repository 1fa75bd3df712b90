"""API keys: a tenant name that no function spec could carry is refused when its key is made
(a key for "Team C" once broke every listing of that tenant and placement's housekeeping)."""

import subprocess
import sys

import pytest

from thaw_core.store.apikeys import ApiKeys


@pytest.mark.parametrize("tenant", ["Team C", "", "team/c", "-lead", "x" * 64, "ünïcode", "a b"])
async def test_a_key_for_a_malformed_tenant_name_is_refused(r, tenant):
    with pytest.raises(ValueError, match="lowercase letters, digits"):
        await ApiKeys(r).create(tenant)
    assert await r.dbsize() == 0, "nothing written"


@pytest.mark.parametrize("tenant", ["default", "team-c", "acme_2", "0day"])
async def test_a_key_for_a_valid_tenant_works(r, tenant):
    keys = ApiKeys(r)
    assert await keys.tenant_of(await keys.create(tenant)) == tenant


def test_thaw_keys_says_what_is_wrong_with_the_name(redis_url, tmp_path):
    # --state-dir: not the repo's .thaw, whose store credentials (after a `thaw up`) belong to another server
    done = subprocess.run([sys.executable, "-m", "thaw.cli", "--state-dir", str(tmp_path), "keys", "--tenant", "Team C", "--redis", redis_url],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "thaw keys: tenant 'Team C': use 1-63 lowercase letters" in done.stderr
    assert "Traceback" not in done.stderr


def test_thaw_quota_sets_and_shows_a_tenants_limits(redis_url, tmp_path):
    def quota(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "thaw.cli", "--state-dir", str(tmp_path), "quota", "--tenant", "acme", "--redis", redis_url,
                               *args], capture_output=True, text=True, timeout=30)

    assert "0 of unlimited pods" in quota().stdout
    assert "0 of 3 pods, 0 of 8192 MiB vRAM" in quota("--max-pods", "3", "--max-vram-mib", "8192").stdout
    assert "0 of 5 pods, 0 of 8192 MiB" in quota("--max-pods", "5").stdout, "one limit changes, the other stays"
    bad = quota("--max-pods", "-1")
    assert bad.returncode == 1 and "max_pods -1: use 0 or more" in bad.stderr
