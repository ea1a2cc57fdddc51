"""Configuration, read from the environment or a ``.env`` file.

The names of the seed's ``.env`` (``MAX_SINGLE_CHAR``, ``MAX_USER_RECORD_COUNT``,
``MAX_HISTORY_CONTENT_CHAR``, ``CLEAR_CYCLE``, ``BOT_ID``, ``DEFAULT_NAME_SPACE``)
are kept as they were so an existing deployment's file works unchanged; the
host's own settings carry a ``WXHELPER_`` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every knob of the host. Construct with keyword arguments to override the environment."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- identity and routing -------------------------------------------------
    bot_id: str = Field("wxhelper-bot", validation_alias=_env("BOT_ID", "bot_id"))
    default_namespace: str = Field(
        "聊天", validation_alias=_env("DEFAULT_NAME_SPACE", "default_namespace")
    )

    # --- caps from the seed .env ---------------------------------------------
    max_single_char: int = Field(9000, ge=1, validation_alias=_env("MAX_SINGLE_CHAR", "max_single_char"))
    max_user_record_count: int = Field(
        50, ge=1, validation_alias=_env("MAX_USER_RECORD_COUNT", "max_user_record_count")
    )
    max_history_content_char: int = Field(
        10000, ge=1, validation_alias=_env("MAX_HISTORY_CONTENT_CHAR", "max_history_content_char")
    )
    clear_cycle: float = Field(
        7, gt=0, validation_alias=_env("CLEAR_CYCLE", "clear_cycle"),
        description="Days a record lives; older records never reach a prompt and are purged.",
    )

    # --- prompt budget (the seed's quotas of a 90 000-char total) --------------
    total_prompt_chars: int = Field(90000, ge=1000, validation_alias=_env("WXHELPER_TOTAL_PROMPT_CHARS", "total_prompt_chars"))
    chat_share: float = Field(0.2, ge=0, le=1, validation_alias=_env("WXHELPER_CHAT_SHARE", "chat_share"))
    friend_circle_share: float = Field(0.3, ge=0, le=1, validation_alias=_env("WXHELPER_FRIEND_CIRCLE_SHARE", "friend_circle_share"))
    namespace_share: float = Field(0.4, ge=0, le=1, validation_alias=_env("WXHELPER_NAMESPACE_SHARE", "namespace_share"))
    chat_max_records: int = Field(40, ge=0, validation_alias=_env("WXHELPER_CHAT_MAX_RECORDS", "chat_max_records"))
    namespace_max_records: int = Field(100, ge=0, validation_alias=_env("WXHELPER_NAMESPACE_MAX_RECORDS", "namespace_max_records"))
    friend_circle_max_records: int = Field(100, ge=0, validation_alias=_env("WXHELPER_FRIEND_CIRCLE_MAX_RECORDS", "friend_circle_max_records"))
    fair_algorithm: str = Field("max_min", validation_alias=_env("WXHELPER_FAIR_ALGORITHM", "fair_algorithm"))
    share_chat_across_bots: bool = Field(
        False, validation_alias=_env("WXHELPER_SHARE_CHAT_ACROSS_BOTS", "share_chat_across_bots"),
        description="By default two bots in one group keep separate chat histories.",
    )

    # --- storage and knowledge ------------------------------------------------
    data_dir: Path = Field(Path(".wxhelper"), validation_alias=_env("WXHELPER_DATA_DIR", "data_dir"))
    store: Optional[str] = Field(None, validation_alias=_env("WXHELPER_STORE", "store"))
    embedding: str = Field(
        "use", validation_alias=_env("WXHELPER_EMBEDDING", "embedding"),
        description="use (multilingual USE, default), hashed[:dims], openai:<model>, st:<path>, onnx:<path>.",
    )
    chroma_url: Optional[str] = Field(None, validation_alias=_env("CHROMA_URL", "chroma_url"))
    chroma_timeout: float = Field(
        5.0, gt=0, validation_alias=_env("WXHELPER_CHROMA_TIMEOUT", "chroma_timeout"),
        description="Seconds for connecting to and each call of a Chroma server (CHROMA_URL).",
    )
    knowledge_top_k: int = Field(4, ge=0, validation_alias=_env("WXHELPER_KNOWLEDGE_TOP_K", "knowledge_top_k"))
    knowledge_min_score: Optional[float] = Field(
        None, validation_alias=_env("WXHELPER_KNOWLEDGE_MIN_SCORE", "knowledge_min_score"),
        description="Relevance floor (cosine); unset: the embedding's own (use 0.3, hashed 0.05).",
    )
    vector_cache: Optional[str] = Field(
        None, validation_alias=_env("WXHELPER_VECTOR_CACHE", "vector_cache"),
        description="SQLite file caching passage vectors across processes; unset: ~/.cache/wxhelper; 'off': none.",
    )
    knowledge_hybrid: bool = Field(
        False, validation_alias=_env("WXHELPER_KNOWLEDGE_HYBRID", "knowledge_hybrid"),
        description="Fuse vector and lexical (BM25) rankings by reciprocal rank.",
    )
    knowledge_batch_wait_ms: float = Field(
        20.0, ge=0, le=1000, validation_alias=_env("WXHELPER_KNOWLEDGE_BATCH_WAIT_MS", "knowledge_batch_wait_ms"),
        description="Longest a question waits for others to embed with, only while at least 4 other messages "
                    "are being handled; 0: never waits.",
    )

    # --- Redis history store and fair-algorithm weights (issue 3) --------------------
    # WXHELPER_STORE wins, then REDIS_URL, then REDIS_HOST (+ PORT/DB/PASSWORD), then SQLite.
    redis_url: Optional[str] = Field(None, validation_alias=_env("REDIS_URL", "redis_url"))
    redis_host: Optional[str] = Field(None, validation_alias=_env("REDIS_HOST", "redis_host"))
    redis_port: int = Field(6379, ge=1, le=65535, validation_alias=_env("REDIS_PORT", "redis_port"))
    redis_db: int = Field(0, ge=0, validation_alias=_env("REDIS_DB", "redis_db"))
    redis_password: Optional[str] = Field(None, validation_alias=_env("REDIS_PASSWORD", "redis_password"))
    redis_socket_timeout: float = Field(
        2.0, gt=0, validation_alias=_env("WXHELPER_REDIS_TIMEOUT", "redis_socket_timeout"),
        description="Seconds for every Redis connect and call; a slower call raises StoreError.",
    )
    user_weights: str = Field(
        "", validation_alias=_env("WXHELPER_USER_WEIGHTS", "user_weights"),
        description="Per-user weights for the weighted and hybrid algorithms: 'vip1=3,vip2=2'.",
    )

    @field_validator("user_weights")
    @classmethod
    def _weights_parse(cls, value: str) -> str:
        _parse_weights(value)
        return value

    @property
    def user_weight_map(self) -> tuple[tuple[str, float], ...]:
        return _parse_weights(self.user_weights)

    def _redis_store_url(self) -> Optional[str]:
        from urllib.parse import quote

        url = self.store or self.redis_url
        if not url and self.redis_host:
            auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
            url = f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"
        if url and "socket_timeout=" not in url:
            url += ("&" if "?" in url else "?") + f"socket_timeout={self.redis_socket_timeout:g}"
        return url

    # --- plugins and templates --------------------------------------------------
    load_plugins: Optional[str] = Field(None, validation_alias=_env("WXHELPER_LOAD_PLUGINS", "load_plugins"))
    templates_dir: Optional[Path] = Field(None, validation_alias=_env("WXHELPER_TEMPLATES_DIR", "templates_dir"))

    # --- LLM -------------------------------------------------------------------
    openai_api_key: Optional[str] = Field(None, validation_alias=_env("OPENAI_API_KEY", "openai_api_key"))
    openai_base_url: Optional[str] = Field(None, validation_alias=_env("OPENAI_BASE_URL", "openai_base_url"))
    model: str = Field("gpt-4o-mini", validation_alias=_env("WXHELPER_MODEL", "model"))
    llm_timeout: float = Field(60.0, gt=0, validation_alias=_env("WXHELPER_LLM_TIMEOUT", "llm_timeout"))
    llm_max_retries: int = Field(2, ge=0, validation_alias=_env("WXHELPER_LLM_MAX_RETRIES", "llm_max_retries"))
    llm_retry_budget: float = Field(30.0, gt=0, validation_alias=_env("WXHELPER_LLM_RETRY_BUDGET", "llm_retry_budget"),
                                    description="Seconds all attempts of one LLM call may take together.")
    llm_backoff_base: float = Field(0.5, ge=0, validation_alias=_env("WXHELPER_LLM_BACKOFF_BASE", "llm_backoff_base"))
    llm_backoff_max: float = Field(8.0, ge=0, validation_alias=_env("WXHELPER_LLM_BACKOFF_MAX", "llm_backoff_max"))
    llm_stream: bool = Field(False, validation_alias=_env("WXHELPER_LLM_STREAM", "llm_stream"))
    temperature: Optional[float] = Field(None, validation_alias=_env("WXHELPER_TEMPERATURE", "temperature"))

    # --- reliability ------------------------------------------------------------
    bot_owner_ids: str = Field("", validation_alias=_env("BOT_OWNER_IDS", "bot_owner_ids"),
                               description="Comma-separated user ids allowed to add and delete categories.")
    source_lease_ttl: float = Field(30.0, gt=0, validation_alias=_env("WXHELPER_SOURCE_LEASE_TTL", "source_lease_ttl"))
    replay_on_start: bool = Field(True, validation_alias=_env("WXHELPER_REPLAY_ON_START", "replay_on_start"))

    # --- HTTP service (wxhelper serve, issue 6) ---------------------------------------
    api_token: Optional[SecretStr] = Field(
        None, validation_alias=_env("WXHELPER_API_TOKEN", "api_token"),
        description="Bearer token every HTTP route but /healthz and /readyz requires; unset: no auth, loopback only.",
    )
    max_body: int = Field(1048576, ge=1, validation_alias=_env("WXHELPER_MAX_BODY", "max_body"),
                          description="Largest HTTP request body in bytes; a larger one gets 413.")

    console_events: int = Field(
        200, ge=0, le=100000, validation_alias=_env("WXHELPER_CONSOLE_EVENTS", "console_events"),
        description="Handled messages the operator console keeps (ring buffer, or a capped Redis stream); 0: none.")

    log_level: str = Field("INFO", validation_alias=_env("WXHELPER_LOG_LEVEL", "log_level"))

    @field_validator("fair_algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        from .fairness import ALGORITHMS

        if value not in ALGORITHMS:
            raise ValueError(f"fair_algorithm must be one of {sorted(ALGORITHMS)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _shares_fit(self) -> "Settings":
        total = self.chat_share + self.friend_circle_share + self.namespace_share
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"chat_share + friend_circle_share + namespace_share is {total:.2f}; the limit is 1.0"
            )
        return self

    @property
    def clear_cycle_seconds(self) -> float:
        return self.clear_cycle * 86400.0

    @property
    def store_url(self) -> str:
        """The history store's URI; SQLite in the data directory unless told otherwise."""
        if self.store and not self.store.startswith("redis"):
            return self.store
        redis_url = self._redis_store_url()
        if redis_url:
            return redis_url
        return f"sqlite:///{(self.data_dir / 'history.sqlite3').resolve()}"

    @property
    def knowledge_chars(self) -> int:
        """What the history shares leave of the total, for retrieved passages."""
        used = self.chat_share + self.friend_circle_share + self.namespace_share
        return max(0, int(self.total_prompt_chars * (1.0 - used)))

    def history_budget(self, kind: str) -> tuple[int, int]:
        """(max_records, max_chars) for one history kind: its share of the total, capped by MAX_HISTORY_CONTENT_CHAR."""
        share, records = {
            "chat": (self.chat_share, self.chat_max_records),
            "friend_circle": (self.friend_circle_share, self.friend_circle_max_records),
            "namespace": (self.namespace_share, self.namespace_max_records),
        }[kind]
        return records, min(int(self.total_prompt_chars * share), self.max_history_content_char)

    @property
    def owner_ids(self) -> frozenset[str]:
        return frozenset(u.strip() for u in self.bot_owner_ids.split(",") if u.strip())

    def plugin_allow_list(self) -> Optional[list[str]]:
        """None: load every installed plugin. A list (maybe empty): only those distributions."""
        if self.load_plugins is None:
            return None
        return [name.strip() for name in self.load_plugins.split(",") if name.strip()]


def _parse_weights(text: str) -> tuple[tuple[str, float], ...]:
    """``"vip1=3, vip2=2"`` → ``(("vip1", 3.0), ("vip2", 2.0))``; weights must be positive numbers."""
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        user, sep, weight = part.rpartition("=")
        if not sep or not user.strip():
            raise ValueError(f"user weight {part.strip()!r} is not 'user=weight'")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"user weight {part.strip()!r}: {weight.strip()!r} is not a number") from None
        if not value > 0 or value == float("inf"):
            raise ValueError(f"user weight {part.strip()!r} must be a positive number")
        out.append((user.strip(), value))
    return tuple(out)
