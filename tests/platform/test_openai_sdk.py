"""The official `openai` Python SDK against the gateway's OpenAI-compatible paths, as users call
them: `model` names the function, the API key is Thaw's, and a streamed chat arrives chunk by
chunk while the worker writes it (examples/echo speaks chat completions)."""

import time

import openai
import pytest

from tests.platform.conftest import deploy, echo_spec

SAID = "hello from the openai sdk"


@pytest.fixture
async def client(platform, http, api_key):
    await deploy(http, platform.url, {**echo_spec(), "env": {"ECHO_STREAM_GAP_S": "0.25"}})
    async with openai.AsyncOpenAI(base_url=platform.url + "/v1", api_key=api_key, max_retries=0) as sdk:
        yield sdk


async def test_a_chat_completion_comes_back_whole(client):
    done = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": SAID}])
    assert done.choices[0].message.content == SAID and done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens == len(SAID.split())


async def test_a_streamed_chat_arrives_as_the_worker_writes_it(client):
    stream = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": SAID}],
                                                  stream=True)
    pieces, arrivals = [], []
    async for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")
        arrivals.append(time.monotonic())
    assert "".join(pieces) == SAID
    words = len(SAID.split())
    assert arrivals[-1] - arrivals[0] > 0.25 * (words - 1) * 0.8, "chunks must not wait for the whole answer"


async def test_an_unknown_model_is_the_sdks_not_found_error_with_thaws_reason(client):
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="no-such-fn", messages=[{"role": "user", "content": "x"}])
    assert "no-such-fn" in str(missing.value)
    with pytest.raises(openai.AuthenticationError):
        async with openai.AsyncOpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0) as stranger:
            await stranger.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
