"""Talking to any OpenAI-compatible endpoint through the official ``openai`` client.

With no API key the host does not call anything: :func:`LLM.available` is
False and the host answers offline. Retries with exponential backoff and
jitter are the client's own (``max_retries``), bounded by ``timeout``.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator, Optional

from openai import AsyncOpenAI, OpenAIError

from .settings import Settings

log = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """The LLM could not produce an answer (after the client's retries)."""


class LLM:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Optional[AsyncOpenAI] = None
        if settings.openai_api_key:
            self._client = AsyncOpenAI(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url or None,
                timeout=settings.llm_timeout,
                max_retries=settings.llm_max_retries,
            )

    @property
    def available(self) -> bool:
        return self._client is not None

    def _params(self, messages: list[dict[str, str]]) -> dict:
        params: dict = {"model": self.settings.model, "messages": messages}
        if self.settings.temperature is not None:
            params["temperature"] = self.settings.temperature
        return params

    async def complete(self, messages: list[dict[str, str]]) -> str:
        """The whole answer; streams under the hood when ``WXHELPER_LLM_STREAM`` is set."""
        if self.settings.llm_stream:
            return "".join([piece async for piece in self.stream(messages)])
        client = self._require()
        try:
            response = await client.chat.completions.create(**self._params(messages))
        except OpenAIError as exc:
            raise LLMError(f"{type(exc).__name__}: {exc}") from exc
        if not response.choices:
            raise LLMError("the LLM answered with no choices")
        return response.choices[0].message.content or ""

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """Text pieces as the LLM produces them."""
        client = self._require()
        try:
            stream = await client.chat.completions.create(**self._params(messages), stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except OpenAIError as exc:
            raise LLMError(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # a stream cut midway surfaces as an httpx error
            raise LLMError(f"stream broke: {type(exc).__name__}: {exc}") from exc

    def _require(self) -> AsyncOpenAI:
        if self._client is None:
            raise LLMError("no OPENAI_API_KEY is set")
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
