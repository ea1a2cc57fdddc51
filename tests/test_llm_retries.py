"""LLM failures: retried with backoff within a time budget, then the apology and the offline answer."""

from __future__ import annotations

import time

from wxhelper import InboundMessage
from wxhelper.testing import host_for

FAST = dict(llm_max_retries=3, llm_backoff_base=0.01, llm_backoff_max=0.05)


async def test_transient_errors_are_retried_until_an_answer(data_dir, fake_llm):
    fake_llm.fail_next(500, count=1)
    fake_llm.fail_next(429, count=1)
    async with host_for(data_dir, [], llm=fake_llm, **FAST) as host:
        reply = await host.handle(InboundMessage(user_id="u", content="你好"))
    assert reply.offline is False and reply.text == "LLM-ANSWER: 你好"
    assert len(fake_llm.chat_requests()) == 3


async def test_client_errors_are_not_retried(data_dir, fake_llm):
    fake_llm.fail_next(400, count=1)
    async with host_for(data_dir, [], llm=fake_llm, **FAST) as host:
        reply = await host.handle(InboundMessage(user_id="u", content="你好"))
    assert reply.offline is True and "llm" in reply.degraded
    assert len(fake_llm.chat_requests()) == 1


async def test_timeouts_are_retried(data_dir, fake_llm):
    fake_llm.delay_next(1.5, count=1)
    async with host_for(data_dir, [], llm=fake_llm, llm_timeout=0.5, **FAST) as host:
        reply = await host.handle(InboundMessage(user_id="u", content="你好"))
    assert reply.offline is False and len(fake_llm.chat_requests()) == 2


async def test_total_time_is_bounded_by_the_retry_budget(data_dir, fake_llm):
    fake_llm.fail_next(503, count=100)
    async with host_for(data_dir, [], llm=fake_llm, llm_max_retries=100, llm_backoff_base=0.1,
                        llm_backoff_max=0.2, llm_retry_budget=0.6) as host:
        started = time.monotonic()
        reply = await host.handle(InboundMessage(user_id="u", content="你好 13812345678"))
        elapsed = time.monotonic() - started
        board = await host.history("聊天")
    assert reply.offline is True and reply.text.startswith("抱歉")
    assert elapsed < 2.0
    assert 2 <= len(fake_llm.chat_requests()) < 100
    assert len(board) == 1  # nothing recorded is lost


async def test_retry_after_header_is_honoured(data_dir, fake_llm):
    fake_llm.fail_next(429, count=1, retry_after=0.3)
    async with host_for(data_dir, [], llm=fake_llm, **FAST) as host:
        started = time.monotonic()
        reply = await host.handle(InboundMessage(user_id="u", content="你好"))
    assert reply.offline is False and time.monotonic() - started >= 0.3


async def test_a_stream_that_fails_before_its_first_piece_is_retried(data_dir, fake_llm):
    fake_llm.fail_next(502, count=1)
    async with host_for(data_dir, [], llm=fake_llm, llm_stream=True, **FAST) as host:
        reply = await host.handle(InboundMessage(user_id="u", content="讲个故事"))
    assert reply.offline is False and reply.text == "LLM-ANSWER: 讲个故事"
    assert [b.get("stream") for b in fake_llm.chat_requests()] == [True, True]


def test_answer_text_takes_the_first_choice_and_names_what_is_wrong():
    import pytest as _pytest

    from wxhelper.llm import LLMError, answer_text

    assert answer_text(b'{"choices": [{"message": {"role": "assistant", "content": "\xe5\xa5\xbd"}}]}') == "好"
    assert answer_text(b'{"choices": [{"message": {"content": null}}]}') == ""
    with _pytest.raises(LLMError, match="no choices"):
        answer_text(b'{"choices": []}')
    with _pytest.raises(LLMError, match="not a chat completion"):
        answer_text(b"<html>bad gateway</html>")
    with _pytest.raises(LLMError, match="no message"):
        answer_text(b'{"choices": [{"text": "legacy"}]}')
