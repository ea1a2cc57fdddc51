"""What a plugin hands the host for each namespace it supplies.

A :class:`Namespace` is plain data plus one callable (the record filter). The host
validates it when the plugin registers it, so a plugin author learns about a
mistake at load time (``wxhelper namespaces`` shows it) rather than on the first
message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .phone import has_phone_number

RecordFilter = Callable[[str], bool]
"""Decides whether a message's text may enter the shared namespace and friend-circle histories."""

NAME_PATTERN = re.compile(r"^[^\s/|\\:{}*]{1,64}$")
"""Namespace names appear in commands (``/切换|<名称>``) and storage keys, so no spaces, ``/``, ``|``."""


class NamespaceError(ValueError):
    """A plugin registered a namespace the host cannot use."""


@dataclass(frozen=True)
class Namespace:
    """One namespace: its identity, how messages are routed to it, and its resources.

    ``templates_dir`` must hold at least ``system.j2``; ``corpus_dir`` holds
    ``.md``/``.txt``/``.jsonl`` files that the host indexes for retrieval.
    ``record_filter`` defaults to the host's phone-number filter: only messages
    carrying a valid phone number enter the shared board.
    """

    name: str
    title: str
    description: str = ""
    keywords: tuple[str, ...] = ()
    templates_dir: Optional[Path] = None
    corpus_dir: Optional[Path] = None
    record_filter: RecordFilter = field(default=has_phone_number)
    plugin: str = ""
    """Filled in by the host: the distribution (or built-in module) that registered it."""
    version: str = ""

    def __post_init__(self) -> None:
        validate_namespace(self)


def validate_namespace(ns: Namespace) -> None:
    """Raise :class:`NamespaceError` naming the field that is wrong."""
    if not isinstance(ns.name, str) or not NAME_PATTERN.match(ns.name):
        raise NamespaceError(
            f"namespace name {ns.name!r} is invalid: 1-64 characters, no whitespace or any of / | \\ : {{ }} *"
        )
    if not isinstance(ns.title, str) or not ns.title.strip():
        raise NamespaceError(f"namespace {ns.name!r}: title must be a non-empty string")
    if isinstance(ns.keywords, str) or not all(isinstance(k, str) and k for k in ns.keywords):
        raise NamespaceError(f"namespace {ns.name!r}: keywords must be a tuple of non-empty strings")
    if ns.templates_dir is not None and not (Path(ns.templates_dir) / "system.j2").is_file():
        raise NamespaceError(
            f"namespace {ns.name!r}: templates_dir {str(ns.templates_dir)!r} has no system.j2"
        )
    if ns.corpus_dir is not None and not Path(ns.corpus_dir).is_dir():
        raise NamespaceError(f"namespace {ns.name!r}: corpus_dir {str(ns.corpus_dir)!r} is not a directory")
    if not callable(ns.record_filter):
        raise NamespaceError(f"namespace {ns.name!r}: record_filter must be callable")
