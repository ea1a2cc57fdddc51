"""Rendering a namespace's prompt from its jinja2 templates.

Templates are plugin package data, chained with a :class:`jinja2.ChoiceLoader`
as datasette does: the operator's ``WXHELPER_TEMPLATES_DIR/<namespace>/`` first,
then the plugin's own ``templates_dir``, then the host's defaults. Rendering
happens in a :class:`SandboxedEnvironment` and user text only ever arrives as a
variable, so ``{{ 7*7 }}`` in a message reaches the LLM literally.

Rendering is on every message's path, so two costs are cut without loosening the
sandbox: reading a data field of the host's own values (a history record, a
passage, the message, the namespace) skips the sandbox's per-access safety check
(those fields are plain strings and numbers, which the check would allow anyway),
and the ``datetime`` filter remembers the minutes it formatted.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from .messages import InboundMessage, Passage, Record
from .namespace import Namespace

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = Path(__file__).parent / "templates" / "default"
SYSTEM_TEMPLATE = "system.j2"


TEMPLATE_CHECK_SECONDS = 2.0
"""How long a loaded template is used before jinja is asked whether its file changed."""


def format_timestamp(value: Any) -> str:
    """The ``datetime`` filter: epoch seconds → ``YYYY-MM-DD HH:MM`` in local time."""
    try:
        seconds = float(value)
        return _minute(int(seconds // 60)) if seconds == seconds else str(value)
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)


@lru_cache(maxsize=4096)
def _minute(minute: int) -> str:
    # Whole minutes: every UTC offset in use is a whole number of minutes, so the minute's start
    # formats exactly like any second in it.
    return datetime.fromtimestamp(minute * 60).strftime("%Y-%m-%d %H:%M")


# Data fields of the host's own values that templates read: strings, numbers and tuples of them.
_PLAIN_FIELDS: dict[type, frozenset[str]] = {
    Record: frozenset(Record.model_fields),
    Passage: frozenset(Passage.model_fields),
    InboundMessage: frozenset(InboundMessage.model_fields),
    Namespace: frozenset({"name", "title", "description", "keywords", "plugin", "version"}),
}


class HostSandbox(SandboxedEnvironment):
    """The sandbox, minus its per-access check on the plain data fields listed in ``_PLAIN_FIELDS``.

    Everything else (methods, properties, underscore names, any other object) takes the
    sandbox's own path, so what a template can reach is unchanged.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        fields = _PLAIN_FIELDS.get(type(obj))
        if fields is not None and attribute in fields:
            return obj.__dict__[attribute]
        return super().getattr(obj, attribute)


def _environment(search_path: list[Path]) -> SandboxedEnvironment:
    loader = ChoiceLoader([FileSystemLoader(str(p)) for p in search_path])
    env = HostSandbox(loader=loader, undefined=StrictUndefined, autoescape=False,
                      keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["datetime"] = format_timestamp
    return env


class PromptRenderer:
    """One sandboxed environment per namespace, built once and reused for every message."""

    def __init__(self, override_dir: Optional[Path] = None) -> None:
        self.override_dir = Path(override_dir) if override_dir else None
        self._envs: dict[str, SandboxedEnvironment] = {}
        self._templates: dict[str, tuple[float, Any]] = {}
        self._fallback = _environment([DEFAULT_TEMPLATES])

    def search_path(self, ns: Namespace) -> list[Path]:
        path: list[Path] = []
        if self.override_dir is not None:
            path.append(self.override_dir / ns.name)
        if ns.templates_dir is not None:
            path.append(Path(ns.templates_dir))
        path.append(DEFAULT_TEMPLATES)
        return path

    def environment(self, ns: Namespace) -> SandboxedEnvironment:
        env = self._envs.get(ns.name)
        if env is None:
            env = self._envs[ns.name] = _environment(self.search_path(ns))
        return env

    def _system_template(self, ns: Namespace) -> Any:
        """The namespace's compiled ``system.j2``; jinja checks the file for changes at most every 2 s."""
        cached = self._templates.get(ns.name)
        now = time.monotonic()
        if cached is None or cached[0] < now:
            cached = self._templates[ns.name] = (now + TEMPLATE_CHECK_SECONDS,
                                                 self.environment(ns).get_template(SYSTEM_TEMPLATE))
        return cached[1]

    def render_system(self, ns: Namespace, context: dict[str, Any]) -> tuple[str, Optional[str]]:
        """Render ``system.j2``; on a broken template fall back to the host default and say why."""
        try:
            return self._system_template(ns).render(**context).strip(), None
        except TemplateError as exc:
            error = f"template {SYSTEM_TEMPLATE} of namespace {ns.name!r} failed: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a plugin's template or filter may raise anything
            error = f"template {SYSTEM_TEMPLATE} of namespace {ns.name!r} raised {type(exc).__name__}: {exc}"
        log.error(error)
        return self._fallback.get_template(SYSTEM_TEMPLATE).render(**context).strip(), error
