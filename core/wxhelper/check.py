"""``wxhelper check [DISTRIBUTION]…``: what is missing or wrong with a plugin, per namespace.

Every installed plugin is loaded exactly as the host loads them (so a clash with
another plugin's namespace shows), then each checked plugin is reported:

* loading: import errors, misspelled hooks, ``register_namespaces`` raising or
  registering nothing, namespaces the host rejected (``plugins.load_plugins``),
  chat commands that clash or whose ``register_commands`` raises;
* per namespace: a name another plugin registered first, a title shared with
  another namespace, keywords another namespace also has, every ``*.j2`` that
  does not compile, ``system.j2`` failing to render with sample data (in a group
  and a private chat, with full and with empty histories, ``StrictUndefined``),
  a ``prompt_context`` hook that raises, an empty corpus or one whose files
  fail to parse, a record filter that raises.

Problems make the exit status 1; warnings (no keywords, a keyword inside
another namespace's keyword, ignored corpus files…) are printed and leave it 0.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import click

from .namespace import Namespace
from .plugins import LoadedPlugins, PluginStatus, canonical, load_plugins
from .settings import Settings

PHONE_SAMPLE = "出售闲置一件，价格面议，电话13812345678"
PLAIN_SAMPLE = "大家好，请问这个怎么办？"


@dataclass
class NamespaceReport:
    name: str
    title: str = ""
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    corpus_files: int = 0
    passages: int = 0
    keywords: int = 0


@dataclass
class PluginReport:
    plugin: str
    version: str = ""
    status: str = "loaded"
    builtin: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    namespaces: list[NamespaceReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(ns.problems for ns in self.namespaces)


@dataclass
class CheckReport:
    plugins: list[PluginReport]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.plugins)

    def problems(self) -> list[str]:
        """Every problem as one line, ``plugin: [namespace: ]text`` (handy in a test's assert message)."""
        out = []
        for p in self.plugins:
            out += [f"{p.plugin}: {text}" for text in p.problems]
            for ns in p.namespaces:
                out += [f"{p.plugin}: {ns.name}: {text}" for text in ns.problems]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "plugins": [dict(asdict(p), ok=p.ok) for p in self.plugins]}

    def text(self) -> str:
        lines: list[str] = []
        for p in self.plugins:
            lines.append(f"{p.plugin} {p.version}".rstrip() + f": {'ok' if p.ok else 'PROBLEMS'}"
                         + ("" if p.status == "loaded" else f" ({p.status})"))
            lines += [f"  problem: {t}" for t in p.problems]
            lines += [f"  warning: {t}" for t in p.warnings]
            for ns in p.namespaces:
                facts = f"{ns.keywords} keywords, {ns.corpus_files} corpus files, {ns.passages} passages"
                title = f" ({ns.title})" if ns.title else ""
                lines.append(f"  {ns.name}{title}: {'ok' if not ns.problems else 'PROBLEMS'}; {facts}")
                lines += [f"    problem: {t}" for t in ns.problems]
                lines += [f"    warning: {t}" for t in ns.warnings]
        bad = sum(not p.ok for p in self.plugins)
        lines.append(f"{len(self.plugins)} plugin(s) checked, {bad} with problems")
        return "\n".join(lines)


def check_plugins(distributions: Sequence[str] = (), settings: Optional[Settings] = None) -> CheckReport:
    """Load every installed plugin and check the named distributions (all of them when none are named)."""
    settings = settings or Settings(_env_file=None)  # type: ignore[call-arg]
    loaded = load_plugins(settings.model_copy(update={"load_plugins": None}))
    _register_commands(loaded)
    by_canonical = {canonical(name): status for name, status in loaded.statuses.items()}
    reports: list[PluginReport] = []
    if distributions:
        targets: list[PluginStatus] = []
        for dist in distributions:
            status = by_canonical.get(canonical(dist))
            if status is None:
                installed = ", ".join(sorted(s.name for s in loaded.statuses.values() if not s.builtin)) or "none"
                reports.append(PluginReport(dist, status="missing", problems=[
                    f"no installed distribution {dist!r} has a 'wxhelper' entry point (installed plugins: {installed})"]))
            elif status not in targets:
                targets.append(status)
    else:
        targets = list(loaded.statuses.values())
    reports += [_check_plugin(status, loaded) for status in targets]
    return CheckReport(reports)


def _register_commands(loaded: LoadedPlugins) -> None:
    """Collect the plugins' chat commands as the host does, so a bad or clashing command is in the statuses."""
    if not hasattr(loaded.manager.hook, "register_commands"):
        return
    try:
        from .commands import build_commands
    except ImportError:
        return
    build_commands(loaded.manager, loaded.statuses)


def _check_plugin(status: PluginStatus, loaded: LoadedPlugins) -> PluginReport:
    report = PluginReport(status.name, status.version, status.status, status.builtin)
    clash_errors = {f"namespace {n!r} clashes with plugin {w!r}, which registered it first; ignored"
                    for n, w in status.clashes.items()}
    report.problems += [e for e in status.errors if e not in clash_errors]
    for name in status.namespaces:
        report.namespaces.append(_check_namespace(loaded.namespaces[name], loaded, report))
    for name, winner in status.clashes.items():
        report.namespaces.append(NamespaceReport(name, problems=[
            f"the name {name!r} is already registered by plugin {winner!r}, which loads first (plugins load in "
            f"sorted distribution-name order, the first registration wins), so this namespace is ignored: rename it"]))
    return report


def _check_namespace(ns: Namespace, loaded: LoadedPlugins, plugin: PluginReport) -> NamespaceReport:
    report = NamespaceReport(ns.name, ns.title, keywords=len(ns.keywords))
    for other in loaded.statuses.values():
        if ns.name in other.clashes:
            report.warnings.append(f"plugin {other.name!r} also offers a namespace named {ns.name!r}; "
                                   f"it is ignored because this one registered first")
    _check_identity(ns, loaded, report, builtin=plugin.builtin)
    _check_templates(ns, loaded, report, plugin)
    _check_corpus(ns, report)
    _check_filter(ns, report)
    return report


def _check_identity(ns: Namespace, loaded: LoadedPlugins, report: NamespaceReport, builtin: bool) -> None:
    others = [o for o in loaded.namespaces.values() if o.name != ns.name]
    for other in others:
        if ns.title in (other.title, other.name):
            report.problems.append(f"title {ns.title!r} is also the name or title of namespace {other.name!r} "
                                   f"(plugin {other.plugin!r}): /切换|{ns.title} cannot tell them apart")
    if not ns.keywords and not builtin:
        report.warnings.append("no keywords: messages reach this namespace only through /切换 or an explicit namespace")
    if len(set(ns.keywords)) != len(ns.keywords):
        report.warnings.append("duplicate keywords (each counts once)")
    mine = {k.lower(): k for k in ns.keywords}
    for other in others:
        for kw in other.keywords:
            low = kw.lower()
            if low in mine:
                report.problems.append(f"keyword {mine[low]!r} is also a keyword of namespace {other.name!r} "
                                       f"(plugin {other.plugin!r}): messages with it are routed by the other keywords alone")
                continue
            for mlow, k in mine.items():
                if mlow in low:
                    report.warnings.append(f"keyword {k!r} occurs inside {kw!r}, a keyword of namespace {other.name!r}: "
                                           f"a message with {kw!r} counts for both")
                elif low in mlow:
                    report.warnings.append(f"keyword {k!r} contains {kw!r}, a keyword of namespace {other.name!r}: "
                                           f"a message with {k!r} counts for both")
    for k in ns.keywords:
        if len(k) == 1:
            report.warnings.append(f"keyword {k!r} is one character: keywords match as substrings, so it matches "
                                   f"inside unrelated words")


def _check_templates(ns: Namespace, loaded: LoadedPlugins, report: NamespaceReport, plugin: PluginReport) -> None:
    from jinja2 import TemplateSyntaxError

    from .prompt import SYSTEM_TEMPLATE, PromptRenderer
    from .testing import sample_context

    env = PromptRenderer(None).environment(ns)
    if ns.templates_dir is None:
        report.warnings.append("no templates_dir: the host's default system prompt is used")
    else:
        root = Path(ns.templates_dir)
        for path in sorted(root.rglob("*.j2")):
            try:
                env.parse(path.read_text(encoding="utf-8"), name=path.name, filename=str(path))
            except TemplateSyntaxError as exc:
                report.problems.append(f"{path.relative_to(root).as_posix()} line {exc.lineno}: syntax error: {exc.message}")
            except (OSError, UnicodeDecodeError) as exc:
                report.problems.append(f"{path.relative_to(root).as_posix()}: cannot be read: {exc}")
    for group in (True, False):
        for empty in (False, True):
            where = f"{'group' if group else 'private'} chat, {'empty' if empty else 'full'} histories"
            context = sample_context(ns, group=group, empty=empty)
            context["extra"] = _extra(ns, context["message"], loaded, plugin)
            try:
                text = env.get_template(SYSTEM_TEMPLATE).render(**context).strip()
            except Exception as exc:
                report.problems.append(f"{SYSTEM_TEMPLATE} fails to render with sample data ({where}): "
                                       f"{type(exc).__name__}: {exc}")
                return
            if not text:
                report.problems.append(f"{SYSTEM_TEMPLATE} renders to an empty prompt ({where})")
                return


def _extra(ns: Namespace, message: Any, loaded: LoadedPlugins, plugin: PluginReport) -> dict[str, Any]:
    """Merge ``prompt_context`` results as the host does; a checked plugin's raising hook is a problem."""
    extra: dict[str, Any] = {}
    for impl in loaded.manager.hook.prompt_context.get_hookimpls():
        kwargs = {"namespace": ns, "message": message}
        try:
            result = impl.function(**{k: kwargs[k] for k in impl.argnames})
        except Exception as exc:
            if impl.plugin_name == plugin.plugin:
                text = f"prompt_context raised {type(exc).__name__}: {exc} (namespace {ns.name!r})"
                if text not in plugin.problems:
                    plugin.problems.append(text)
            continue
        if result is not None and not isinstance(result, dict) and impl.plugin_name == plugin.plugin:
            text = f"prompt_context returned {type(result).__name__}, not a dict or None; ignored"
            if text not in plugin.warnings:
                plugin.warnings.append(text)
        if isinstance(result, dict):
            for key, value in result.items():
                extra.setdefault(str(key), value)
    return extra


def _check_corpus(ns: Namespace, report: NamespaceReport) -> None:
    from .knowledge.corpus import CORPUS_SUFFIXES, MAX_PASSAGE_CHARS, _split_file, corpus_files

    if ns.corpus_dir is None:
        report.warnings.append("no corpus_dir: answers are not grounded in any knowledge")
        return
    root = Path(ns.corpus_dir)
    files = corpus_files(root)
    ignored = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                     if p.is_file() and p.suffix.lower() not in CORPUS_SUFFIXES and "__pycache__" not in p.parts)
    if ignored:
        report.warnings.append(f"ignored corpus files (only {', '.join(CORPUS_SUFFIXES)} are indexed): "
                               f"{', '.join(ignored[:5])}{' …' if len(ignored) > 5 else ''}")
    if not files:
        report.problems.append(f"the corpus is empty: no {'/'.join(CORPUS_SUFFIXES)} files in {root}")
        return
    report.corpus_files = len(files)
    sections: dict[str, bool] = {}  # "file › heading" -> has a question line (markdown and JSON lines)
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            pieces = list(_split_file(path, MAX_PASSAGE_CHARS))
            count = len(pieces)
            if path.suffix.lower() != ".txt":
                for heading, _text, _meta, questions in pieces:
                    key = f"{rel} › {heading}" if heading else rel
                    sections[key] = sections.get(key, False) or bool(questions)
        except UnicodeDecodeError as exc:
            report.problems.append(f"corpus file {rel} is not UTF-8: {exc}")
            continue
        except Exception as exc:
            report.problems.append(f"corpus file {rel} fails to parse: {exc}")
            continue
        if count == 0:
            report.warnings.append(f"corpus file {rel} yields no passages (empty?)")
        report.passages += count
    if report.corpus_files and not report.passages and not report.problems:
        report.problems.append("the corpus is empty: its files yield no passages")
    bare = [key for key, asked in sections.items() if not asked]
    if bare:
        report.warnings.append(f"{len(bare)} of {len(sections)} sections have no question line "
                               f"('<!-- 问法: q1 | q2 | q3 -->' under the heading, see docs/plugins.md), "
                               f"so only their own words find them: {', '.join(bare[:3])}{' …' if len(bare) > 3 else ''}")


def _check_filter(ns: Namespace, report: NamespaceReport) -> None:
    if not callable(ns.record_filter):  # validate_namespace rejects this already; kept for safety
        report.problems.append("record_filter is not callable")
        return
    results = {}
    for label, text in (("a message with a phone number", PHONE_SAMPLE), ("a message without one", PLAIN_SAMPLE)):
        try:
            results[label] = ns.record_filter(text)
        except Exception as exc:
            report.problems.append(f"record_filter raised {type(exc).__name__}: {exc} on {label} ({text!r}); "
                                   f"the host then records nothing shared")
            return
        if not isinstance(results[label], bool):
            report.warnings.append(f"record_filter returned {type(results[label]).__name__} for {label}, not bool")
    if not any(results.values()):
        report.warnings.append("record_filter accepts neither sample message: nothing will reach the namespace board")


@click.command("check")
@click.argument("distributions", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(distributions: tuple[str, ...], as_json: bool) -> None:
    """Check installed plugins (all, or the named distributions): exit status 1 if any has a problem."""
    from .cli import _settings

    report = check_plugins(distributions, _settings())
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        click.echo(report.text())
    sys.exit(0 if report.ok else 1)
