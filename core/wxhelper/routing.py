"""Which namespace a message goes to.

First that applies: the message's explicit ``namespace``; the namespace its
source is bound to (by the ``/切换`` command); the namespace whose keywords the
message matches most; the default namespace.
"""

from __future__ import annotations

from typing import Mapping, Optional

from .namespace import Namespace


class UnknownNamespace(ValueError):
    """An explicit namespace that no plugin registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"namespace {name!r} is not registered; known namespaces: {', '.join(known)}")
        self.name = name


def lookup(namespaces: Mapping[str, Namespace], name_or_title: str) -> Optional[Namespace]:
    """A namespace by its name, or failing that by its title (users type titles: ``/切换|二手车``)."""
    if name_or_title in namespaces:
        return namespaces[name_or_title]
    for ns in namespaces.values():
        if ns.title == name_or_title:
            return ns
    return None


def keyword_match(namespaces: Mapping[str, Namespace], content: str) -> Optional[str]:
    """The namespace with the most distinct keywords in ``content``; ties go to the first registered."""
    best: Optional[str] = None
    best_hits = 0
    lowered = content.lower()
    for ns in namespaces.values():
        hits = sum(1 for kw in set(ns.keywords) if kw.lower() in lowered)
        if hits > best_hits:
            best, best_hits = ns.name, hits
    return best


def choose_namespace(
    namespaces: Mapping[str, Namespace],
    content: str,
    default: str,
    explicit: Optional[str] = None,
    bound: Optional[str] = None,
) -> str:
    """Apply the routing order; an unknown explicit namespace is an error, an unknown binding is ignored."""
    if explicit is not None:
        ns = lookup(namespaces, explicit)
        if ns is None:
            raise UnknownNamespace(explicit, sorted(namespaces))
        return ns.name
    if bound is not None and bound in namespaces:
        return bound
    matched = keyword_match(namespaces, content)
    if matched is not None:
        return matched
    return default
