"""Talking to any OpenAI-compatible endpoint through the official ``openai`` client.

With no API key the host does not call anything: :func:`LLM.available` is
False and the host answers offline. Timeouts, connection errors, 429 and 5xx
are retried here (the client's own retries are off) with exponential backoff
and full jitter, within a total time budget, so a user waits a bounded time
before getting the apology and the offline answer. A stream is retried only
until its first piece has been sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any, AsyncIterator, Optional

import orjson
from openai import (APIConnectionError, APIStatusError, APITimeoutError, AsyncOpenAI, AsyncStream,
                    OpenAIError, RateLimitError)
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from .llm_transport import UrlMemo, lean_http_client
from .settings import Settings

log = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """The LLM could not produce an answer (after the client's retries)."""


class _Client(AsyncOpenAI):
    """The ``openai`` client, with the URL of a request path parsed once per ``base_url``
    (:class:`wxhelper.llm_transport.UrlMemo`); everything else is the client's own."""

    def _prepare_url(self, url: str, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # a signature the memo does not know: the client's own
            return super()._prepare_url(url, *args, **kwargs)
        memo = self.__dict__.get("_wxhelper_url_memo")
        if memo is None:
            memo = self.__dict__["_wxhelper_url_memo"] = UrlMemo()
        return memo.get(getattr(self, "_base_url", None), url, super()._prepare_url)


class LLM:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Optional[AsyncOpenAI] = None
        if settings.openai_api_key:
            self._client = _Client(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url or None,
                timeout=settings.llm_timeout,
                max_retries=0,
                http_client=lean_http_client(timeout=settings.llm_timeout),  # one send per request (llm_transport.py)
            )

    @property
    def available(self) -> bool:
        return self._client is not None

    def _params(self, messages: list[dict[str, str]]) -> dict:
        """The request body. Sent through the client's ``post`` rather than ``chat.completions.create``:
        the typed method re-validates every message of the prompt (about 7 ms of CPU for a 40-message
        prompt), which is the host's largest per-message cost; the request on the wire is the same."""
        params: dict = {"model": self.settings.model, "messages": messages}
        if self.settings.temperature is not None:
            params["temperature"] = self.settings.temperature
        return params

    def _body(self, messages: list[dict[str, str]], **extra: object) -> bytes:
        """The request body as JSON bytes (UTF-8, compact, as the client would write it), encoded with
        orjson, the same bytes 20 times faster (the client's ``json.dumps``: ~0.05 ms for a 40-message prompt)."""
        return orjson.dumps({**self._params(messages), **extra})

    def backoff(self, attempt: int) -> float:
        """Full jitter: a random wait in [0, base * 2**attempt], capped."""
        ceiling = min(self.settings.llm_backoff_max, self.settings.llm_backoff_base * (2 ** attempt))
        return random.uniform(0, ceiling)

    async def _with_retries(self, call, deadline: float):  # type: ignore[no-untyped-def]
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                retryable = is_retryable(exc)
                wait = retry_after(exc) or self.backoff(attempt)
                if not retryable or attempt >= self.settings.llm_max_retries or time.monotonic() + wait > deadline:
                    raise LLMError(f"{type(exc).__name__}: {exc}") from exc
                log.warning("LLM call failed (%s), retry %d in %.2fs", type(exc).__name__, attempt + 1, wait)
                await asyncio.sleep(wait)
                attempt += 1

    async def complete(self, messages: list[dict[str, str]]) -> str:
        """The whole answer; streams under the hood when ``WXHELPER_LLM_STREAM`` is set."""
        if self.settings.llm_stream:
            return "".join([piece async for piece in self.stream(messages)])
        client = self._require()
        deadline = time.monotonic() + self.settings.llm_retry_budget

        async def call():  # type: ignore[no-untyped-def]
            # The body's bytes, not a ChatCompletion: building that model field by field costs more CPU
            # than the one string the host needs from it (status errors are raised by the client as before).
            return await client.post("/chat/completions", cast_to=bytes, content=self._body(messages))

        return answer_text(await self._with_retries(call, deadline))

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """Text pieces as the LLM produces them; retried while nothing has been yielded yet."""
        client = self._require()
        deadline = time.monotonic() + self.settings.llm_retry_budget
        attempt = 0
        while True:
            sent = False
            try:
                stream = await client.post("/chat/completions", cast_to=ChatCompletion,
                                           content=self._body(messages, stream=True),
                                           stream=True, stream_cls=AsyncStream[ChatCompletionChunk])
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                        sent = True
                        yield chunk.choices[0].delta.content
                return
            except Exception as exc:  # a stream cut midway surfaces as an httpx/openai error
                wait = retry_after(exc) or self.backoff(attempt)
                if (sent or not is_retryable(exc) or attempt >= self.settings.llm_max_retries
                        or time.monotonic() + wait > deadline):
                    raise LLMError(f"{'stream broke' if sent else 'stream failed'}: {type(exc).__name__}: {exc}") from exc
                log.warning("LLM stream failed (%s), retry %d in %.2fs", type(exc).__name__, attempt + 1, wait)
                await asyncio.sleep(wait)
                attempt += 1

    def _require(self) -> AsyncOpenAI:
        if self._client is None:
            raise LLMError("no OPENAI_API_KEY is set")
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def answer_text(body: bytes) -> str:
    """The first choice's text from a chat completion's JSON body; LLMError when it has none."""
    try:
        data = json.loads(body)
        choices = data["choices"]
    except (ValueError, TypeError, KeyError) as exc:
        raise LLMError(f"the LLM answered with something that is not a chat completion: {body[:200]!r}") from exc
    if not choices:
        raise LLMError("the LLM answered with no choices")
    try:
        content = choices[0]["message"].get("content")
    except (TypeError, KeyError, AttributeError) as exc:
        raise LLMError(f"the LLM's first choice has no message: {choices[0]!r:.200}") from exc
    if content is None:
        return ""
    return content if isinstance(content, str) else str(content)


def is_retryable(exc: BaseException) -> bool:
    """Timeouts, dropped connections, 408, 409, 429 and 5xx are worth another try; 4xx are not."""
    if isinstance(exc, (APITimeoutError, APIConnectionError, RateLimitError)):
        return True
    if isinstance(exc, APIStatusError):
        return exc.status_code in (408, 409) or exc.status_code >= 500
    return not isinstance(exc, OpenAIError)  # httpx transport errors from a broken stream


def retry_after(exc: BaseException) -> Optional[float]:
    """The server's ``Retry-After`` (seconds), when it sent one and it is short."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= 60 else None
