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
from openai import (APIConnectionError, APIStatusError, APITimeoutError, AsyncOpenAI, AsyncStream, NotGiven,
                    Omit, OpenAIError, RateLimitError)
from openai._models import FinalRequestOptions
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from .llm_transport import UrlMemo, lean_http_client
from .settings import Settings

log = logging.getLogger(__name__)


_OMITTED = object()


class LLMError(RuntimeError):
    """The LLM could not produce an answer (after the client's retries)."""


REQUEST_MEMO_SIZE = 64
"""Request shapes a client remembers (:meth:`_Client._build_request`); one per retry count in practice."""
_openai_log = logging.getLogger("openai._base_client")


class _Client(AsyncOpenAI):
    """The ``openai`` client, with the URL of a request path parsed once per ``base_url``
    (:class:`wxhelper.llm_transport.UrlMemo`) and the head of a plain POST built once per shape
    (:meth:`_build_request`); everything else is the client's own."""

    def _build_request(self, options: Any, *args: Any, **kwargs: Any) -> Any:
        """The httpx request, as the client builds it; a plain POST's head from the one built before.

        The client builds a request's headers three times over (its own, merged with its defaults;
        httpx's merge with the client's; the request's own copy with Host and Content-Length), each a
        case-insensitive multi-dict, ~0.1 ms of the client's ~0.7 ms a call. For a POST of bytes with
        nothing per call in its head (no per-call headers, query, timeout, files or JSON; no
        idempotency header; no cookies in the client's jar; no provider runtime), the head depends
        only on the key below: the method, URL, headers (Content-Length aside) and extensions of the
        request the client built for that key are kept, and the next request is the same with the new
        body (same header order; Content-Length from the body, as httpx sets it). Anything else, or a
        key that cannot be formed, is the client's own ``_build_request``.
        """
        if args or (kwargs and set(kwargs) != {"retries_taken"}):
            return super()._build_request(options, *args, **kwargs)
        retries_taken = kwargs.get("retries_taken", 0)
        try:
            key = self._plain_request_key(options, retries_taken)
        except AttributeError:  # an openai whose internals differ from the ones read here: its own request
            key = None
        if key is None:
            return super()._build_request(options, retries_taken=retries_taken)
        memo = self.__dict__.setdefault("_wxhelper_request_memo", {})
        shape = memo.get(key)
        if shape is None:
            request = super()._build_request(options, retries_taken=retries_taken)
            timeout = request.extensions.get("timeout")
            if set(request.extensions) == {"timeout"} and type(timeout) is dict:
                if len(memo) >= REQUEST_MEMO_SIZE:
                    memo.clear()
                memo[key] = (type(request), request.method, request.url,
                             [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"], timeout)
            return request
        _openai_log.debug("Building HTTP request: method=%s retries_taken=%i", "POST", retries_taken)
        cls, method, url, headers, timeout = shape
        return cls(method, url, headers=headers, content=options.content, extensions={"timeout": dict(timeout)})

    def _plain_request_key(self, options: Any, retries_taken: int) -> Optional[tuple]:
        """What a plain POST's head depends on (see :meth:`_build_request`), or None when it is not one."""
        if (options.method != "post" or type(options.content) is not bytes or options.json_data is not None
                or options.extra_json is not None or options.files is not None or options.params
                or not isinstance(options.headers, NotGiven) or not isinstance(options.timeout, NotGiven)
                or self._idempotency_header is not None or getattr(self, "_provider_runtime", None) is not None
                or self.default_query or len(self._client.cookies) or type(options.url) is not str):
            return None
        security = options.security
        if self._auth_query(security):
            return None
        parts: list[Any] = [options.url, retries_taken, repr(self.timeout), self._base_url, id(self._client),
                            tuple(self._client.headers.raw), tuple(sorted(security.items()))]
        for headers in (self._auth_headers(security), self.default_headers):
            for name, value in headers.items():
                if type(value) is str:
                    parts.append((name, value))
                elif isinstance(value, Omit):
                    parts.append((name, _OMITTED))
                else:  # a value the key cannot hold
                    return None
        return tuple(parts)

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
        self._options_template: Any = None  # a FinalRequestOptions; False: build none (see _post_options)
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

    def _post_options(self, body: bytes) -> Optional[FinalRequestOptions]:
        """The options ``client.post("/chat/completions", cast_to=bytes, content=body)`` builds, without
        building them: ``FinalRequestOptions.construct`` copies every default of its 17 fields (deep
        copies for the mutable ones), ~40 µs a call. A copy of one constructed here, with the body and
        fresh copies of its mutable defaults, has the same fields, values and set fields (the client
        copies the options again before each attempt, as before). None when this ``openai``'s options
        do not have the fields read here: the caller then uses ``client.post`` itself."""
        template = self._options_template
        if template is False:
            return None
        try:
            if template is None:
                template = self._options_template = FinalRequestOptions.construct(
                    method="post", url="/chat/completions", json_data=None, content=b"", files=None)
            options = template.model_copy()
            fields = options.__dict__  # not setattr: pydantic would count the fields as set by the caller
            fields["content"] = body
            fields["params"] = dict(template.params)
            fields["security"] = dict(template.security)
        except (AttributeError, TypeError, ValueError) as exc:
            log.info("the LLM client builds its own request options (%s: %s)", type(exc).__name__, exc)
            self._options_template = False
            return None
        return options

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
            # client.request with the options client.post would build (see _post_options).
            body = self._body(messages)
            options = self._post_options(body)
            if options is None:
                return await client.post("/chat/completions", cast_to=bytes, content=body)
            return await client.request(bytes, options)

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
