"""The data that crosses the host's boundary: what a bot sends in and what it gets back."""

from __future__ import annotations

import time
import unicodedata
import uuid
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ID_CHARS = 256
"""Ids become storage keys and log fields; a longer id is a client bug, not a user."""

MAX_CLOCK_SKEW = 300
"""Seconds a message's timestamp may be ahead of this host's clock (bots' clocks drift)."""

Channel = Literal["chat", "friend_circle"]
HistoryKind = Literal["chat", "namespace", "friend_circle"]
HISTORY_KINDS: tuple[HistoryKind, ...] = ("chat", "namespace", "friend_circle")

_ALLOWED_CONTROL = {"\n", "\t"}


def _check_id(value: Optional[str], field: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string")
    if not value.strip():
        raise ValueError(f"{field} must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"{field} is {len(value)} characters; the limit is {MAX_ID_CHARS}")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in value):
        raise ValueError(f"{field} must not contain control or unassigned characters")
    return value


def clean_content(text: str) -> str:
    """Drop control characters other than newline and tab; they only ever break prompts and logs."""
    return "".join(
        ch for ch in text if ch in _ALLOWED_CONTROL or unicodedata.category(ch) not in ("Cc", "Cs")
    )


class InboundMessage(BaseModel):
    """One message from a bot: who sent it, where, and what it says.

    ``group_id`` is None (or equal to ``user_id``) in a private chat. ``channel``
    is ``"friend_circle"`` for posts from the friend-circle feed: they are
    recorded, not answered.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bot_id: Optional[str] = None
    user_id: str
    group_id: Optional[str] = None
    content: str
    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: float = Field(default_factory=time.time, allow_inf_nan=False)
    namespace: Optional[str] = None
    channel: Channel = "chat"

    @field_validator("bot_id", "user_id", "group_id", "message_id", "namespace", mode="before")
    @classmethod
    def _ids(cls, value: Any, info: Any) -> Any:
        if value is None and info.field_name in ("user_id", "message_id"):
            raise ValueError(f"{info.field_name} is required")
        if info.field_name == "message_id" and value is None:
            return value
        return _check_id(value, info.field_name)

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("content must be a string")
        value = clean_content(value)
        if not value.strip():
            raise ValueError("content must not be empty or only whitespace")
        return value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> Any:
        if value is None:
            return time.time()
        return value

    @field_validator("timestamp", mode="after")
    @classmethod
    def _sane_timestamp(cls, value: float) -> float:
        if value < 0:
            raise ValueError("timestamp must be seconds since the epoch (>= 0)")
        if value > time.time() + MAX_CLOCK_SKEW:
            raise ValueError(f"timestamp is more than {MAX_CLOCK_SKEW} seconds in the future")
        return value

    @property
    def source_id(self) -> str:
        """``group_id`` in a group, ``user_id`` in a private chat: the unit of chat-history isolation."""
        return resolve_source_id(self.user_id, self.group_id)

    @property
    def is_group(self) -> bool:
        return self.source_id != self.user_id


def resolve_source_id(user_id: str, group_id: Optional[str]) -> str:
    """``source_id = group_id`` when it is set and differs from ``user_id``, else ``user_id``."""
    if group_id and group_id != user_id:
        return group_id
    return user_id


class Record(BaseModel):
    """One history entry, as stored and as the CLI and API print it."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    source_id: str
    bot_id: str
    content: str
    timestamp: float
    message_id: str
    score: float = 0.0
    """Optional quality signal (likes, comments) used by the ``quality`` algorithm."""

    @property
    def chars(self) -> int:
        return len(self.content)


class Passage(BaseModel):
    """A knowledge passage retrieved for a prompt."""

    text: str
    source: str
    heading: str = ""
    score: float


class Reply(BaseModel):
    """What the host answers for one message."""

    text: str
    namespace: str
    source_id: str
    message_id: str
    recorded: list[HistoryKind] = Field(default_factory=list)
    prompt: list[dict[str, str]] = Field(default_factory=list)
    retrieved: list[Passage] = Field(default_factory=list)
    offline: bool = False
    truncated: bool = False
    answered: bool = True
    """False for friend-circle posts, which are recorded but not answered."""
    degraded: list[str] = Field(default_factory=list)
    """Dependencies that failed while handling this message (``"llm"``, ``"knowledge"``, ``"plugin:<name>"``)."""
    command: Optional[str] = None
    """The command this message was (``"切换"``…); commands are not sent to the LLM nor recorded."""
    timings: dict[str, float] = Field(default_factory=dict)
    """Milliseconds spent per stage: ``history``, ``retrieval``, ``assembly`` (both plus rendering), ``llm``, ``record``, ``total``."""
