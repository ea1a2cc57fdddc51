"""The plugin contract: every hook a wxhelper plugin may implement.

Each docstring is the specification of its hook. Plugins implement hooks with
``@wxhelper.hookimpl`` on module-level functions whose names match exactly; a
misspelled name fails loudly at load time (``check_pending``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from .messages import InboundMessage
    from .namespace import Namespace
    from .settings import Settings

PROJECT = "wxhelper"
hookspec = HookspecMarker(PROJECT)
hookimpl = HookimplMarker(PROJECT)


@hookspec
def register_namespaces(register: "Callable[[Namespace], None]", settings: "Settings") -> None:
    """Register the namespaces this plugin supplies.

    Call ``register(Namespace(...))`` once per namespace. ``settings`` is the
    host's configuration (declare the parameter only if you need it). The host fills in the
    plugin name and version, validates the namespace (name, title, a
    ``system.j2`` in ``templates_dir``, an existing ``corpus_dir``) and reports a
    clash with a namespace another plugin already registered: the first
    registration wins (plugins load in sorted distribution order) and the clash
    is shown by ``wxhelper namespaces``. The return value is ignored.
    """


@hookspec
def prompt_context(namespace: "Namespace", message: "InboundMessage") -> Optional[dict[str, Any]]:
    """Return extra variables for the namespace's prompt templates, or None.

    Called for every message routed to any namespace; return None for
    namespaces that are not yours. The dicts of all plugins are merged (later
    plugins do not override keys set by earlier ones) and exposed to templates
    as ``extra``. User text in ``message`` is data: never build template source
    from it.
    """


@hookspec
def register_commands(register: "Callable[..., None]") -> None:
    """Register chat commands (``/名称|参数|参数``) this plugin supplies.

    Call ``register(name, handler, help="…", owner_only=False)`` once per
    command. ``handler(ctx, args)`` gets a :class:`wxhelper.commands.CommandContext`
    (the message, its source, whether the sender is one of ``BOT_OWNER_IDS``, the
    host) and the ``|``-separated arguments, and returns the reply text (it may
    be a coroutine function). Commands are never sent to the LLM and never
    recorded in any history. A name the host or an earlier plugin registered is
    a clash: the first registration wins and the clash is reported under your
    plugin. With ``owner_only=True`` the host refuses everyone but the owners
    before your handler runs.
    """
