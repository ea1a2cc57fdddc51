"""Tests for wxhelper.fake_llm, driven by the REAL openai client (never mocked)."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request

import openai
import pytest

from wxhelper.fake_llm import FakeLLM

MSGS = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there"},
]


def _stream_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a truncated stream may surface as, whichever HTTP stack openai uses."""
    excs: list[type[BaseException]] = [openai.APIError]
    for mod in ("httpx", "httpx2"):
        try:
            excs.append(__import__(mod).HTTPError)
        except ImportError:
            pass
    return tuple(excs)


@pytest.fixture
def fake():
    with FakeLLM() as f:
        yield f


def client(fake: FakeLLM, **kw) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5)
    return openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, **kw)


def aclient(fake: FakeLLM, **kw) -> openai.AsyncOpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5)
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key=fake.api_key, **kw)


# -- chat, non-streaming --------------------------------------------------------


def test_base_url_and_default_echo_reply(fake):
    assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/v1")
    out = client(fake).chat.completions.create(model="gpt-test", messages=MSGS)
    assert out.object == "chat.completion"
    assert out.model == "gpt-test"
    assert out.id and out.created > 0
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "FAKE-LLM: hello there"
    assert choice.finish_reason == "stop"
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_request_is_recorded(fake):
    client(fake).chat.completions.create(model="m", messages=MSGS, temperature=0.2)
    assert len(fake.requests) == 1
    req = fake.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["method"] == "POST"
    assert req["headers"]["authorization"] == "Bearer test-key"
    assert req["headers"]["content-type"].startswith("application/json")
    assert all(k == k.lower() for k in req["headers"])
    assert req["body"]["model"] == "m"
    assert req["body"]["messages"] == MSGS
    assert req["body"]["temperature"] == 0.2
    assert fake.chat_requests() == [req["body"]]


def test_fixed_reply():
    with FakeLLM(reply="fixed answer") as f:
        out = client(f).chat.completions.create(model="m", messages=MSGS)
    assert out.choices[0].message.content == "fixed answer"


def test_callable_reply_sees_request():
    seen = []

    def reply(body: dict) -> str:
        seen.append(body)
        return f"{body['model']}:{len(body['messages'])}"

    with FakeLLM(reply=reply) as f:
        out = client(f).chat.completions.create(model="mx", messages=MSGS)
    assert out.choices[0].message.content == "mx:2"
    assert seen == [{"model": "mx", "messages": MSGS}]


def test_raising_reply_callable_gives_500():
    def reply(body: dict) -> str:
        raise RuntimeError("boom")

    with FakeLLM(reply=reply) as f, pytest.raises(openai.InternalServerError, match="boom"):
        client(f).chat.completions.create(model="m", messages=MSGS)


# -- chat, streaming --------------------------------------------------------------


def test_streaming_chunks_join_to_full_text():
    text = "The quick brown fox jumps over the lazy dog."
    with FakeLLM(reply=text, chunk_size=5) as f:
        stream = client(f).chat.completions.create(model="m", messages=MSGS, stream=True)
        chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == text
    assert len(pieces) == math.ceil(len(text) / 5)
    assert all(len(p) <= 5 for p in pieces)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streaming_include_usage(fake):
    stream = client(fake).chat.completions.create(
        model="m", messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "FAKE-LLM: hello there"


def test_break_stream_raises_before_full_text():
    text = "a fairly long answer that will be cut off"
    with FakeLLM(reply=text, chunk_size=4) as f:
        f.break_stream_next(after_chunks=3)
        got = []
        with pytest.raises(_stream_errors()):
            for c in client(f).chat.completions.create(model="m", messages=MSGS, stream=True):
                got.append(c.choices[0].delta.content or "")
        assert "".join(got) == text[:8]  # role chunk + two 4-char pieces
        # the fault is consumed: the next stream is complete
        again = client(f).chat.completions.create(model="m", messages=MSGS, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in again) == text


# -- embeddings -----------------------------------------------------------------------


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def test_embeddings_single_and_batch_float():
    with FakeLLM(embedding_dim=32) as f:
        c = client(f)
        one = c.embeddings.create(model="emb", input="hello", encoding_format="float")
        batch = c.embeddings.create(model="emb", input=["hello", "world", "hello"], encoding_format="float")
    assert one.object == "list" and one.model == "emb"
    assert len(one.data) == 1 and one.data[0].index == 0
    v = one.data[0].embedding
    assert len(v) == 32 and abs(_norm(v) - 1) < 1e-5
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert batch.data[0].embedding == v == batch.data[2].embedding
    assert batch.data[1].embedding != v
    assert batch.usage.prompt_tokens > 0
    assert f.requests[0]["body"]["encoding_format"] == "float"


def test_embeddings_base64_default_path_matches_float(fake):
    c = client(fake)
    default = c.embeddings.create(model="emb", input=["alpha", "beta"])
    # the installed client asks for base64 when no format is given, and decodes it
    assert fake.requests[-1]["body"]["encoding_format"] == "base64"
    floats = c.embeddings.create(model="emb", input=["alpha", "beta"], encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert all(len(d.embedding) == 64 for d in default.data)
    # explicit base64: the client returns the raw string untouched
    raw = c.embeddings.create(model="emb", input="alpha", encoding_format="base64")
    assert isinstance(raw.data[0].embedding, str)


def test_embeddings_deterministic_across_instances_and_dimensions():
    with FakeLLM() as a, FakeLLM() as b:
        va = client(a).embeddings.create(model="e", input="same").data[0].embedding
        vb = client(b).embeddings.create(model="e", input="same").data[0].embedding
        v8 = client(a).embeddings.create(model="e", input="same", dimensions=8).data[0].embedding
    assert va == vb
    assert len(v8) == 8


async def test_async_embeddings(fake):
    c = aclient(fake)
    out = await c.embeddings.create(model="e", input=["x", "y"])
    assert [len(d.embedding) for d in out.data] == [64, 64]
    await c.close()


# -- models and unknown paths --------------------------------------------------------


def test_models_list(fake):
    models = client(fake).models.list()
    assert [m.id for m in models.data] == [fake.model]


def test_unknown_path_is_404_json(fake):
    with pytest.raises(openai.NotFoundError) as ei:
        client(fake).get("/nope", cast_to=object)
    assert ei.value.body["type"] == "invalid_request_error"
    req = urllib.request.Request(fake.base_url + "/nope")
    with pytest.raises(urllib.error.HTTPError) as ei2:
        urllib.request.urlopen(req, timeout=5)
    assert ei2.value.code == 404
    assert "error" in json.loads(ei2.value.read())


# -- errors and faults -----------------------------------------------------------------


def test_fail_next_429_is_rate_limit_error(fake):
    fake.fail_next(429)
    with pytest.raises(openai.RateLimitError) as ei:
        client(fake).chat.completions.create(model="m", messages=MSGS)
    assert ei.value.status_code == 429
    assert ei.value.code == "rate_limit_exceeded"
    # consumed: the next request succeeds
    assert client(fake).chat.completions.create(model="m", messages=MSGS).choices[0].message.content


def test_fail_next_500_is_internal_server_error_also_for_embeddings(fake):
    fake.fail_next(500, count=2)
    with pytest.raises(openai.InternalServerError):
        client(fake).chat.completions.create(model="m", messages=MSGS)
    with pytest.raises(openai.InternalServerError):
        client(fake).embeddings.create(model="e", input="x")
    client(fake).embeddings.create(model="e", input="x")


def test_fail_next_custom_body_and_retry_after(fake):
    fake.fail_next(503, retry_after=7, body={"error": {"message": "overloaded", "type": "x", "param": None, "code": "c"}})
    with pytest.raises(openai.InternalServerError) as ei:
        client(fake).chat.completions.create(model="m", messages=MSGS)
    assert ei.value.status_code == 503
    assert ei.value.message.endswith("overloaded") or "overloaded" in str(ei.value)
    assert ei.value.response.headers["retry-after"] == "7"
    assert ei.value.response.headers["retry-after-ms"] == "7000"


def test_client_retries_single_500_and_succeeds(fake):
    fake.fail_next(500, retry_after=0.01)
    out = client(fake, max_retries=2).chat.completions.create(model="m", messages=MSGS)
    assert out.choices[0].message.content == "FAKE-LLM: hello there"
    assert len(fake.chat_requests()) == 2


def test_wrong_api_key_is_authentication_error(fake):
    c = openai.OpenAI(base_url=fake.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        c.chat.completions.create(model="m", messages=MSGS)
    assert ei.value.status_code == 401
    assert ei.value.code == "invalid_api_key"
    # a rejected request does not consume queued faults
    fake.fail_next(429)
    with pytest.raises(openai.AuthenticationError):
        c.embeddings.create(model="e", input="x")
    with pytest.raises(openai.RateLimitError):
        client(fake).embeddings.create(model="e", input="x")


def test_delay_beyond_timeout_is_api_timeout_error(fake):
    fake.delay_next(3)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client(fake, timeout=0.3).chat.completions.create(model="m", messages=MSGS)
    assert time.monotonic() - t0 < 2
    # a short delay within the timeout still answers
    fake.delay_next(0.1)
    assert client(fake, timeout=5).chat.completions.create(model="m", messages=MSGS).choices


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"content": "no role"}]},
        {"model": "m", "messages": [{"role": "user"}]},
        {"model": "m", "messages": "not a list"},
        {"model": "", "messages": MSGS},
    ],
)
def test_bad_chat_body_is_bad_request(fake, kwargs):
    with pytest.raises(openai.BadRequestError) as ei:
        client(fake).chat.completions.create(**kwargs)
    err = ei.value.body
    assert err["type"] == "invalid_request_error"
    assert set(err) >= {"message", "type", "param", "code"}


def test_bad_embeddings_body_is_bad_request(fake):
    with pytest.raises(openai.BadRequestError):
        client(fake).embeddings.create(model="e", input=[])
    with pytest.raises(openai.BadRequestError):
        client(fake).embeddings.create(model="e", input=[1.5])  # type: ignore[list-item]


# -- async client -----------------------------------------------------------------------


async def test_async_chat_and_stream():
    with FakeLLM(reply="async hello world", chunk_size=3) as f:
        c = aclient(f)
        out = await c.chat.completions.create(model="m", messages=MSGS)
        assert out.choices[0].message.content == "async hello world"
        stream = await c.chat.completions.create(model="m", messages=MSGS, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
        assert text == "async hello world"
        await c.close()


async def test_async_faults():
    with FakeLLM(reply="0123456789abcdef", chunk_size=2) as f:
        c = aclient(f)
        f.fail_next(429)
        with pytest.raises(openai.RateLimitError):
            await c.chat.completions.create(model="m", messages=MSGS)
        f.delay_next(3)
        with pytest.raises(openai.APITimeoutError):
            await c.with_options(timeout=0.3).chat.completions.create(model="m", messages=MSGS)
        f.break_stream_next(after_chunks=2)
        got = ""
        with pytest.raises(_stream_errors()):
            stream = await c.chat.completions.create(model="m", messages=MSGS, stream=True)
            async for ch in stream:
                got += ch.choices[0].delta.content or ""
        assert got == "01"
        await c.close()


# -- lifecycle ------------------------------------------------------------------------------


def test_stop_is_idempotent_and_closes_port():
    f = FakeLLM().start()
    assert f.start() is f
    url = f.base_url
    f.stop()
    f.stop()
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=url, api_key="test-key", max_retries=0, timeout=2).models.list()


def test_base_url_before_start_raises():
    with pytest.raises(RuntimeError):
        FakeLLM().base_url
