"""Rendering a namespace's prompt from its jinja2 templates.

Templates are plugin package data, chained with a :class:`jinja2.ChoiceLoader`
as datasette does: the operator's ``WXHELPER_TEMPLATES_DIR/<namespace>/`` first,
then the plugin's own ``templates_dir``, then the host's defaults. Rendering
happens in a :class:`SandboxedEnvironment` and user text only ever arrives as a
variable, so ``{{ 7*7 }}`` in a message reaches the LLM literally.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from .namespace import Namespace

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = Path(__file__).parent / "templates" / "default"
SYSTEM_TEMPLATE = "system.j2"


def format_timestamp(value: Any) -> str:
    """The ``datetime`` filter: epoch seconds → ``YYYY-MM-DD HH:MM`` in local time."""
    try:
        return datetime.fromtimestamp(float(value)).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value)


def _environment(search_path: list[Path]) -> SandboxedEnvironment:
    loader = ChoiceLoader([FileSystemLoader(str(p)) for p in search_path])
    env = SandboxedEnvironment(loader=loader, undefined=StrictUndefined, autoescape=False,
                               keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["datetime"] = format_timestamp
    return env


class PromptRenderer:
    """One sandboxed environment per namespace, built once and reused for every message."""

    def __init__(self, override_dir: Optional[Path] = None) -> None:
        self.override_dir = Path(override_dir) if override_dir else None
        self._envs: dict[str, SandboxedEnvironment] = {}
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

    def render_system(self, ns: Namespace, context: dict[str, Any]) -> tuple[str, Optional[str]]:
        """Render ``system.j2``; on a broken template fall back to the host default and say why."""
        try:
            return self.environment(ns).get_template(SYSTEM_TEMPLATE).render(**context).strip(), None
        except TemplateError as exc:
            error = f"template {SYSTEM_TEMPLATE} of namespace {ns.name!r} failed: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a plugin's template or filter may raise anything
            error = f"template {SYSTEM_TEMPLATE} of namespace {ns.name!r} raised {type(exc).__name__}: {exc}"
        log.error(error)
        return self._fallback.get_template(SYSTEM_TEMPLATE).render(**context).strip(), error
