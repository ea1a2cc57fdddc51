"""Helpers for testing wxhelper plugins and bots against a real host.

Everything here runs real parts: the host loads plugins through their entry
points, history goes to SQLite in a temporary directory, knowledge to an
embedded Chroma, and the LLM is :class:`FakeLLM`, a small OpenAI-compatible
server on loopback that the real ``openai`` client talks to.

    from wxhelper.testing import host_for, FakeLLM

    async def test_answers(tmp_path):
        async with host_for(tmp_path, plugins=["wxhelper-car-client"]) as host:
            reply = await host.handle({"user_id": "u1", "content": "二手车过户要什么材料"})
            assert reply.namespace == "car_client"
"""

from __future__ import annotations

import contextlib
import sys
import textwrap
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Iterator, Optional, Sequence

from .fake_llm import FakeLLM
from .host import Host
from .messages import InboundMessage, Passage, Record, Reply
from .namespace import Namespace
from .settings import Settings

__all__ = ["FakeLLM", "host_for", "make_settings", "temporary_plugin", "prompt_text", "assert_in_prompt",
           "assert_not_in_prompt", "load_namespace", "sample_context", "render_system_prompt"]

_ISOLATED_ENV = {
    # Settings read the environment; tests should not pick up the developer's own configuration.
    "openai_api_key": None, "openai_base_url": None, "store": None, "chroma_url": None,
    "templates_dir": None,
}


def make_settings(data_dir: Path, plugins: Optional[Sequence[str]] = None, llm: Optional[FakeLLM] = None,
                  **overrides: Any) -> Settings:
    """Settings for a test: data in ``data_dir``, only ``plugins`` loaded (None: all installed), LLM optional."""
    values: dict[str, Any] = dict(_ISOLATED_ENV)
    values.update(data_dir=Path(data_dir), load_plugins=None if plugins is None else ",".join(plugins))
    if llm is not None:
        values.update(openai_api_key=llm.api_key, openai_base_url=llm.base_url, llm_max_retries=0,
                      llm_timeout=10.0)
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def host_for(data_dir: Path, plugins: Optional[Sequence[str]] = None, llm: Optional[FakeLLM] = None,
                   **overrides: Any) -> AsyncIterator[Host]:
    """A started :class:`Host` with only the given plugin distributions loaded (the default namespace always is)."""
    host = Host(make_settings(data_dir, plugins, llm, **overrides))
    await host.start()
    try:
        yield host
    finally:
        await host.close()


def prompt_text(reply: Reply) -> str:
    """The whole prompt sent (or that would be sent) to the LLM, as one string."""
    return "\n".join(m["content"] for m in reply.prompt)


def assert_in_prompt(reply: Reply, *needles: str) -> None:
    text = prompt_text(reply)
    missing = [n for n in needles if n not in text]
    assert not missing, f"not in the prompt: {missing!r}\n--- prompt ---\n{text}"


def assert_not_in_prompt(reply: Reply, *needles: str) -> None:
    text = prompt_text(reply)
    present = [n for n in needles if n in text]
    assert not present, f"unexpectedly in the prompt: {present!r}\n--- prompt ---\n{text}"


def assert_corpus_questions(namespace: Namespace, *, per_passage: int = 4, english: bool = True,
                            min_passages: int = 1) -> None:
    """Every passage of the corpus, read as the host reads it, has ``per_passage`` question lines
    (at least one English when ``english``) and none of them leaked into its text.

    A section without a ``<!-- 问法: … -->`` line is only a ``wxhelper check`` warning; a plugin that
    promises lines for every section asserts it here, so a new section cannot slip in without them.
    """
    from .knowledge.corpus import load_corpus

    passages = load_corpus(namespace)
    assert len(passages) >= min_passages, f"{namespace.name}: {len(passages)} passages, expected >= {min_passages}"
    problems = []
    for p in passages:
        where = f"{p.source} › {p.heading}"
        if "<!--" in p.text or "问法" in p.text:
            problems.append(f"{where}: a question line leaked into the passage text")
        if len(p.questions) != per_passage:
            problems.append(f"{where}: {len(p.questions)} questions, expected {per_passage}: {p.questions!r}")
        elif english and not any(q.isascii() for q in p.questions):
            problems.append(f"{where}: no English question")
    assert not problems, "\n".join(problems)


def _load(name: str, plugins: Optional[Sequence[str]]) -> tuple[Namespace, Any]:
    from .plugins import load_plugins

    loaded = load_plugins(make_settings(Path("."), plugins))
    if name not in loaded.namespaces:
        problems = {s.name: s.errors for s in loaded.statuses.values() if s.errors}
        raise LookupError(f"namespace {name!r} is not registered (loaded: {sorted(loaded.namespaces)}; "
                          f"plugin errors: {problems})")
    return loaded.namespaces[name], loaded


def load_namespace(name: str, plugins: Optional[Sequence[str]] = None) -> Namespace:
    """The registered :class:`Namespace` called ``name``, loading ``plugins`` (None: all installed) as the host does."""
    return _load(name, plugins)[0]


SAMPLE_TIME = 1_735_700_000.0  # 2025-01-01, a fixed time so rendered samples are stable


def sample_context(namespace: Namespace, *, group: bool = True, empty: bool = False, **variables: Any) -> dict[str, Any]:
    """Every variable ``system.j2`` receives, filled with realistic sample data (or empty lists with ``empty``).

    Keyword arguments replace single variables: ``sample_context(ns, extra={"city": "苏州"})``.
    """
    message = InboundMessage(user_id="wxid_alice", group_id="group_1@chatroom" if group else None,
                             content=f"{namespace.title}：有人知道怎么办吗？电话13812345678", timestamp=SAMPLE_TIME)
    knowledge = [] if empty else [
        Passage(text=f"{namespace.title}的示例资料：先核实对方身份，再付款。", source="sample.md",
                heading="示例 › 注意事项", score=0.9),
        Passage(text="没有标题的资料片段。", source="notes.txt", heading="", score=0.4),
    ]
    board = [] if empty else [
        Record(user_id="wxid_bob", source_id="group_1@chatroom", bot_id="bot-1", message_id="m1",
               content="出售闲置，价格面议，电话13912345678", timestamp=SAMPLE_TIME - 3600),
        Record(user_id="wxid_carol", source_id="wxid_carol", bot_id="bot-1", message_id="m2",
               content="求购，联系 0512-65123456 {{ 7*7 }}", timestamp=SAMPLE_TIME - 60),
    ]
    circle = [] if empty else [
        Record(user_id="wxid_dave", source_id="wxid_dave", bot_id="bot-1", message_id="m3",
               content="朋友圈：今天新到一批，18651234567", timestamp=SAMPLE_TIME - 120),
    ]
    context: dict[str, Any] = {
        "namespace": namespace, "message": message, "bot_id": "bot-1", "now": "2025-01-01 12:00",
        "knowledge": knowledge, "board": board, "friend_circle": circle, "extra": {},
    }
    unknown = set(variables) - set(context)
    if unknown:
        raise TypeError(f"unknown template variables {sorted(unknown)}; the host passes only {sorted(context)}")
    context.update(variables)
    return context


def render_system_prompt(namespace: "Namespace | str", *, plugins: Optional[Sequence[str]] = None,
                         templates_dir: Optional[Path] = None, group: bool = True, empty: bool = False,
                         **variables: Any) -> str:
    """Render a namespace's ``system.j2`` exactly as the host does, with :func:`sample_context` data.

    Unlike the host, which falls back to its default template, a template error raises here
    (``jinja2.UndefinedError`` for a variable the host does not pass). ``namespace`` is the name
    of a registered namespace (``plugins`` are loaded as the host loads them, and ``extra`` is what
    their ``prompt_context`` hooks return for the sample message) or a :class:`Namespace` (then
    ``extra`` is ``{}`` unless given). ``templates_dir`` plays the operator's ``WXHELPER_TEMPLATES_DIR``.
    """
    from .prompt import SYSTEM_TEMPLATE, PromptRenderer

    loaded = None
    if isinstance(namespace, str):
        ns, loaded = _load(namespace, plugins)
    else:
        ns = namespace
    env = PromptRenderer(templates_dir).environment(ns)
    context = sample_context(ns, group=group, empty=empty, **variables)
    if loaded is not None and "extra" not in variables:  # what the plugins' prompt_context hooks return, as in the host
        for impl in loaded.manager.hook.prompt_context.get_hookimpls():
            kwargs = {"namespace": ns, "message": context["message"]}
            result = impl.function(**{k: kwargs[k] for k in impl.argnames})
            for key, value in (result or {}).items():
                context["extra"].setdefault(str(key), value)
    return env.get_template(SYSTEM_TEMPLATE).render(**context).strip()


@contextlib.contextmanager
def temporary_plugin(directory: Path, dist_name: str, source: str, *, module: Optional[str] = None,
                     files: Optional[dict[str, str]] = None, version: str = "0.0.1") -> Iterator[str]:
    """Install a throw-away plugin distribution with a real ``wxhelper`` entry point, for the duration.

    Writes ``<module>.py`` (or a package when ``files`` are given) and a
    ``<dist>.dist-info`` with ``entry_points.txt`` into ``directory`` and puts it
    on ``sys.path``, so ``importlib.metadata`` finds it exactly as it finds a
    pip-installed plugin. Yields the distribution name.
    """
    module = module or dist_name.replace("-", "_")
    directory.mkdir(parents=True, exist_ok=True)
    if files:
        pkg = directory / module
        pkg.mkdir(exist_ok=True)
        (pkg / "__init__.py").write_text(textwrap.dedent(source), encoding="utf-8")
        for rel, text in files.items():
            target = pkg / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    else:
        (directory / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = directory / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[wxhelper]\n{module} = {module}\n", encoding="utf-8")
    sys.path.insert(0, str(directory))
    try:
        yield dist_name
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(directory))
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[name]


def iter_contents(records: Iterable[Any]) -> list[str]:
    return [r.content for r in records]
