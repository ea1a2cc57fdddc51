"""The LLM client's requests built from a remembered head (wxhelper.llm._Client) are the ones the openai client builds."""

from __future__ import annotations

import pytest
from openai import NotGiven
from openai._models import FinalRequestOptions

from wxhelper.fake_llm import FakeLLM
from wxhelper.llm import LLM, _Client
from wxhelper.settings import Settings


@pytest.fixture
def llm():
    llm = LLM(Settings(openai_api_key="key-1", openai_base_url="http://127.0.0.1:9/v1"))
    yield llm


def _options(body: bytes = b'{"model":"m","messages":[]}', **extra) -> FinalRequestOptions:
    return FinalRequestOptions.construct(method="post", url="/chat/completions", json_data=None, content=body,
                                         files=None, **extra)


def _libraries(client: _Client, options: FinalRequestOptions, retries_taken: int = 0):
    return super(_Client, client)._build_request(options, retries_taken=retries_taken)


def _same(a, b) -> None:
    assert type(a) is type(b)
    assert (a.method, a.url, a.headers.raw, a.extensions, a.content) == (b.method, b.url, b.headers.raw, b.extensions,
                                                                         b.content)


def test_a_remembered_head_gives_the_librarys_request(llm):
    client = llm._client
    for body in (b"{}", b'{"model":"m","messages":[{"role":"user","content":"\xe4\xbd\xa0"}]}' * 50, b"{}"):
        for retries in (0, 1, 0):
            _same(client._build_request(_options(body), retries_taken=retries),
                  _libraries(client, _options(body), retries))
    assert len(client.__dict__["_wxhelper_request_memo"]) == 2  # one head per retry count


def test_a_new_key_base_url_or_default_header_is_a_new_head(llm):
    client = llm._client
    client._build_request(_options())
    client.api_key = "key-2"
    request = client._build_request(_options())
    assert request.headers["authorization"] == "Bearer key-2"
    _same(request, _libraries(client, _options()))
    client._custom_headers["X-Team"] = "a"
    _same(client._build_request(_options()), _libraries(client, _options()))
    assert client._build_request(_options()).headers["x-team"] == "a"
    client.base_url = "http://127.0.0.1:10/v2"
    request = client._build_request(_options())
    assert str(request.url) == "http://127.0.0.1:10/v2/chat/completions"
    _same(request, _libraries(client, _options()))


def test_anything_per_call_is_built_by_the_library(llm):
    client = llm._client
    client._build_request(_options())
    for options in (_options(headers={"X-Call": "1"}), _options(timeout=5.0), _options(params={"a": "b"}),
                    FinalRequestOptions.construct(method="post", url="/chat/completions", json_data={"model": "m"})):
        assert client._plain_request_key(options, 0) is None
        _same(client._build_request(options), _libraries(client, options))
    assert client._build_request(_options(headers={"X-Call": "1"})).headers["x-call"] == "1"


def test_cookies_from_the_server_are_sent_as_the_library_sends_them(llm):
    client = llm._client
    client._build_request(_options())
    client._client.cookies.set("lb", "node-7", domain="127.0.0.1")
    request = client._build_request(_options())
    assert "lb=node-7" in request.headers.get("cookie", "")
    _same(request, _libraries(client, _options()))


def test_the_post_options_are_the_ones_post_builds(llm):
    ours, theirs = llm._post_options(b"body"), _options(b"body")
    assert ours.model_fields_set == theirs.model_fields_set
    for name, value in theirs.__dict__.items():
        if isinstance(value, NotGiven):
            assert isinstance(ours.__dict__[name], NotGiven)
        else:
            assert ours.__dict__[name] == value, name
    ours.params["x"] = "1"
    ours.security["bearer_auth"] = False
    again = llm._post_options(b"other")  # nothing is shared between two calls' options
    assert again.params == {} and again.security == theirs.security and again.content == b"other"


async def test_calls_reach_the_server_with_the_librarys_head():
    with FakeLLM(reply="好") as fake:
        llm = LLM(Settings(openai_api_key=fake.api_key, openai_base_url=fake.base_url, llm_max_retries=0))
        try:
            assert [await llm.complete([{"role": "user", "content": f"q{i}"}]) for i in range(3)] == ["好"] * 3
        finally:
            await llm.close()
        assert [r["messages"][0]["content"] for r in fake.chat_requests()] == ["q0", "q1", "q2"]


def test_a_client_whose_internals_differ_builds_its_own_request(llm, monkeypatch):
    """An openai release without the internals the memo reads: the library's own request, every time."""
    client = llm._client

    def missing(self, options, retries_taken):
        raise AttributeError("'_Client' object has no attribute '_auth_query'")

    monkeypatch.setattr(_Client, "_plain_request_key", missing)
    for _ in range(2):
        _same(client._build_request(_options()), _libraries(client, _options()))
    assert "_wxhelper_request_memo" not in client.__dict__


async def test_options_that_cannot_be_copied_leave_the_call_to_post():
    """Options without the fields read here (another openai release): the calls go through ``client.post``."""
    with FakeLLM(reply="好") as fake:
        llm = LLM(Settings(openai_api_key=fake.api_key, openai_base_url=fake.base_url, llm_max_retries=0))
        llm._options_template = object()  # a template with no model_copy, params or security
        try:
            assert [await llm.complete([{"role": "user", "content": f"q{i}"}]) for i in range(2)] == ["好"] * 2
            assert llm._options_template is False and llm._post_options(b"{}") is None
        finally:
            await llm.close()
        assert [r["messages"][0]["content"] for r in fake.chat_requests()] == ["q0", "q1"]
