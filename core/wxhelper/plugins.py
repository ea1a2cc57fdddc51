"""Finding and loading plugins: entry points in the ``wxhelper`` group, as simonw/llm does.

Every installed distribution with a ``wxhelper`` entry point loads unless
``WXHELPER_LOAD_PLUGINS`` names a comma-separated allow-list (empty: none). The
built-in default namespace is registered exactly like a third-party plugin and
always loads. Each plugin loads in its own ``try``: a plugin that fails to
import, has a misspelled hook, raises in ``register_namespaces`` or registers a
bad namespace is reported with its name and the reason, and the others go on.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Optional

import pluggy

from . import hookspecs
from .namespace import Namespace, NamespaceError, validate_namespace
from .settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "wxhelper"
DEFAULT_PLUGINS: dict[str, str] = {"wxhelper.default_namespace": "wxhelper.default_namespace"}


@dataclass
class PluginStatus:
    """What ``wxhelper namespaces`` reports about one plugin."""

    name: str
    version: str = ""
    status: str = "loaded"  # "loaded" | "failed"
    errors: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    builtin: bool = False
    clashes: dict[str, str] = field(default_factory=dict)
    """Namespaces this plugin offered that another plugin had registered first: name → that plugin."""

    def fail(self, reason: str) -> None:
        self.status = "failed"
        self.errors.append(reason)
        log.error("plugin %s: %s", self.name, reason)


def canonical(name: str) -> str:
    """PEP 503 normalisation, so ``wxhelper_qzzp`` and ``wxhelper-qzzp`` name the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class LoadedPlugins:
    manager: pluggy.PluginManager
    statuses: dict[str, PluginStatus]
    namespaces: dict[str, Namespace]

    def status_of_namespace(self, name: str) -> Optional[PluginStatus]:
        ns = self.namespaces.get(name)
        return self.statuses.get(ns.plugin) if ns else None


def load_plugins(settings: Settings) -> LoadedPlugins:
    """Load the default plugins and the allowed entry points, then collect their namespaces."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    statuses: dict[str, PluginStatus] = {}
    for name, module_name in DEFAULT_PLUGINS.items():
        status = statuses[name] = PluginStatus(name, _host_version(), builtin=True)
        _register(pm, status, lambda m=module_name: importlib.import_module(m))
    allow = settings.plugin_allow_list()
    allowed = None if allow is None else {canonical(n) for n in allow}
    # Sorted by normalised distribution name, so the first-registration-wins rule for clashing
    # namespaces does not depend on install order, sys.path order or how a name is spelled.
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (canonical(_dist_name(e)), e.name)):
        dist = _dist_name(ep)
        if allowed is not None and canonical(dist) not in allowed:
            continue
        if dist in statuses:
            statuses[dist].fail(f"second entry point {ep.name!r} ignored; one per distribution")
            continue
        status = statuses[dist] = PluginStatus(dist, ep.dist.version if ep.dist else "")
        _register(pm, status, ep.load)
    if allowed is not None:
        for missing in sorted(allowed - {canonical(n) for n in statuses}):
            statuses[missing] = PluginStatus(missing)
            statuses[missing].fail("named in WXHELPER_LOAD_PLUGINS but not installed")
    namespaces = _collect_namespaces(pm, statuses, settings)
    return LoadedPlugins(pm, statuses, namespaces)


def _dist_name(ep) -> str:  # type: ignore[no-untyped-def]
    return ep.dist.name if ep.dist is not None else ep.value.split(":")[0]


def _host_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wxhelper")
    except PackageNotFoundError:
        return ""


def _register(pm: pluggy.PluginManager, status: PluginStatus, load) -> None:  # type: ignore[no-untyped-def]
    try:
        module = load()
    except Exception as exc:  # a plugin's import error must not take the host down
        status.fail(f"import failed: {type(exc).__name__}: {exc}")
        return
    try:
        pm.register(module, name=status.name)
    except Exception as exc:
        status.fail(f"invalid hook implementation: {exc}")
        return
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=status.name)
        status.fail(f"unknown hook (misspelled?): {exc}")


def _collect_namespaces(
    pm: pluggy.PluginManager, statuses: dict[str, PluginStatus], settings: Settings
) -> dict[str, Namespace]:
    """Call each plugin's ``register_namespaces`` alone, so one raising plugin loses only its own namespaces."""
    namespaces: dict[str, Namespace] = {}
    order = list(statuses)
    impls = sorted(
        pm.hook.register_namespaces.get_hookimpls(),
        key=lambda i: order.index(i.plugin_name) if i.plugin_name in order else len(order),
    )
    for impl in impls:
        status = statuses[impl.plugin_name]
        offered: list[Namespace] = []

        def register(namespace: Namespace, _offered: list[Namespace] = offered) -> None:
            if not isinstance(namespace, Namespace):
                raise NamespaceError(
                    f"register() takes a wxhelper.Namespace, got {type(namespace).__name__}"
                )
            validate_namespace(namespace)
            _offered.append(namespace)

        kwargs = {"register": register, "settings": settings}
        try:
            impl.function(**{k: kwargs[k] for k in impl.argnames})
        except Exception as exc:
            status.fail(f"register_namespaces raised {type(exc).__name__}: {exc}")
            continue
        if not offered:
            status.errors.append("registered no namespace")
        for ns in offered:
            owner = namespaces.get(ns.name)
            if owner is not None:
                status.errors.append(
                    f"namespace {ns.name!r} clashes with plugin {owner.plugin!r}, which registered it first; ignored"
                )
                status.clashes[ns.name] = owner.plugin
                log.error("plugin %s: namespace %r already registered by %s", status.name, ns.name, owner.plugin)
                continue
            stamped = _stamp(ns, status)
            namespaces[ns.name] = stamped
            status.namespaces.append(ns.name)
    return namespaces


def _stamp(ns: Namespace, status: PluginStatus) -> Namespace:
    from dataclasses import replace

    return replace(ns, plugin=status.name, version=status.version)
