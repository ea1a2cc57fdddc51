"""The benchmark's lean stand-in LLM (wxhelper.bench.stand_in) answers the host's real LLM client."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from wxhelper.bench.stand_in import StandIn
from wxhelper.llm import LLM, LLMError
from wxhelper.settings import Settings

PROMPT = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "你好"}]


@pytest.fixture
async def stand_in():
    server = await StandIn(api_key="k1", reply="替身的回答，足够长以分成几段。").start()
    yield server
    await server.close()


def _llm(server: StandIn, key: str = "k1", **extra) -> LLM:
    return LLM(Settings(openai_api_key=key, openai_base_url=server.base_url, llm_max_retries=0, **extra))


async def test_the_host_client_gets_the_reply_over_kept_alive_connections(stand_in):
    llm = _llm(stand_in)
    try:
        answers = [await llm.complete(PROMPT) for _ in range(3)]
        answers += await asyncio.gather(*(llm.complete(PROMPT) for _ in range(8)))
    finally:
        await llm.close()
    assert answers == ["替身的回答，足够长以分成几段。"] * 11


async def test_a_streamed_reply_joins_to_the_whole(stand_in):
    llm = _llm(stand_in)
    try:
        pieces = [piece async for piece in llm.stream(PROMPT)]
    finally:
        await llm.close()
    assert len(pieces) > 1 and "".join(pieces) == "替身的回答，足够长以分成几段。"


async def test_a_wrong_key_is_a_401_the_client_does_not_retry(stand_in):
    llm = _llm(stand_in, key="wrong")
    try:
        with pytest.raises(LLMError, match="AuthenticationError"):
            await llm.complete(PROMPT)
    finally:
        await llm.close()


async def test_bad_requests_get_openai_style_errors(stand_in):
    async with httpx.AsyncClient(base_url=stand_in.base_url, headers={"Authorization": "Bearer k1"}) as client:
        missing = await client.post("/chat/completions", json={"model": "m"})
        not_json = await client.post("/chat/completions", content=b"{", headers={"Content-Type": "application/json"})
        unknown = await client.post("/embeddings", json={"model": "m", "input": "x"})
        ok = await client.post("/chat/completions", json={"model": "m", "messages": PROMPT})
    assert missing.status_code == 400 and "messages" in missing.json()["error"]["message"]
    assert not_json.status_code == 400
    assert unknown.status_code == 404
    body = ok.json()
    assert ok.status_code == 200 and body["object"] == "chat.completion" and body["model"] == "m"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "替身的回答，足够长以分成几段。",
                                             "refusal": None}
    assert json.loads(ok.content)["usage"]["total_tokens"] > 0
