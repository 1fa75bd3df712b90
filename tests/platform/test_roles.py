"""API keys carry a role: an admin key deploys, deletes and makes keys for its tenant; an invoker
key invokes and reads, and is told it needs an admin key for anything else."""

import aiohttp

from bus_schemas import redis_keys as K
from thaw_core.store.apikeys import ApiKeys, Caller, key_digest

from tests.platform.conftest import deploy, echo_spec, invoke


async def make_key(http, url: str, body: dict | None) -> tuple[int, dict]:
    async with http.post(url + "/v1/keys", json=body) as resp:
        return resp.status, await resp.json()


async def test_an_admin_makes_an_invoker_key_that_invokes_and_reads_but_changes_nothing(platform, http):
    await deploy(http, platform.url, echo_spec())
    status, made = await make_key(http, platform.url, {"role": "invoker"})
    assert status == 201 and (made["tenant"], made["role"]) == ("default", "invoker")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {made['key']}"}) as invoker:
        assert (await invoke(invoker, platform.url, "echo", b"hi"))[:2] == (200, b"hi")
        async with invoker.get(platform.url + "/v1/functions") as resp:
            assert [f["name"] for f in (await resp.json())["functions"]] == ["echo"]
        for method, path, body in (("POST", "/v1/functions", echo_spec()), ("DELETE", "/v1/functions/echo", None),
                                   ("POST", "/v1/keys", {"role": "admin"})):
            async with invoker.request(method, platform.url + path, json=body) as resp:
                error = (await resp.json())["error"]
                assert (resp.status, error["code"]) == (403, "forbidden"), (method, path)
                assert "needs an admin key" in error["message"]
    async with http.get(platform.url + "/v1/functions/echo") as resp:
        assert resp.status == 200, "the invoker deleted nothing"


async def test_a_key_request_is_checked_like_any_client_input(platform, http):
    status, body = await make_key(http, platform.url, {"role": "root"})
    assert (status, body["error"]["field"]) == (400, "$.role")
    status, body = await make_key(http, platform.url, {"role": "invoker", "tenant": "other"})
    assert (status, body["error"]["field"]) == (400, "$.tenant"), "a key is for the caller's own tenant only"
    status, made = await make_key(http, platform.url, None)
    assert (status, made["role"]) == (201, "invoker"), "the least role by default"


async def test_a_key_stored_before_roles_existed_is_an_admin_key(r):
    key = "thaw_legacy-key-made-by-an-older-version"
    await r.set(K.api_key(key_digest(key)), "acme")
    assert await ApiKeys(r).caller(key) == Caller("acme", "admin", 0.0), "unlimited, as it always was"


async def test_a_key_past_its_rate_gets_429_with_retry_after(platform, http):
    await deploy(http, platform.url, echo_spec())
    status, made = await make_key(http, platform.url, {"role": "invoker", "rate_per_s": 2})
    assert (status, made["rate_per_s"]) == (201, 2)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {made['key']}"}) as slow:
        answers = []
        for _ in range(6):
            async with slow.post(f"{platform.url}/v1/functions/echo/invoke", data=b"x") as resp:
                answers.append((resp.status, resp.headers.get("Retry-After")))
                if resp.status == 429:
                    assert "may make 2 calls a second" in (await resp.json())["error"]["message"]
    assert answers[:2] == [(200, None), (200, None)]
    assert (429, "1") in answers[2:]
    async with http.post(f"{platform.url}/v1/functions/echo/invoke", data=b"x") as resp:
        assert resp.status == 200, "another key is not limited by this one"


async def test_a_tenant_over_its_quota_is_told_so_by_the_503(platform, http, r):
    from thaw_core.store.quotas import Quotas

    await Quotas(r).set("default", max_pods=0, max_vram_mib=None)
    await deploy(http, platform.url, echo_spec(start_timeout_s=4))
    async with http.post(f"{platform.url}/v1/functions/echo/invoke", data=b"x") as resp:
        body = await resp.json()
    assert resp.status == 503
    assert "tenant quota: the tenant holds its most pods (0 of 0 pods" in body["error"]["message"]
