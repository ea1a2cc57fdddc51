"""``wxhelper check`` and namespace clashes: every problem is named with its plugin, clashes resolve deterministically."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack

import pytest
from click.testing import CliRunner

from wxhelper.check import check_plugins
from wxhelper.cli import main
from wxhelper.testing import host_for, temporary_plugin

PLUGIN = """
from pathlib import Path
from wxhelper import hookimpl, Namespace
HERE = Path(__file__).parent
@hookimpl
def register_namespaces(register):
    register(Namespace(name={name!r}, title={title!r}, keywords={keywords!r},
                       templates_dir=HERE / "templates", corpus_dir=HERE / "corpus"{more}))
"""
TEMPLATE = "你是「{{ namespace.title }}」的助手。{% for p in knowledge %}{{ p.text }}{% endfor %}"
CORPUS = {"corpus/guide.md": "# 指南\n\n## 第一节\n\n检查器自检的资料。\n"}


def plugin_source(name: str = "chk", title: str = "检查", keywords: tuple = ("检查器自检",), more: str = "") -> str:
    return PLUGIN.format(name=name, title=title, keywords=keywords, more=more)


def good_files(**extra: str) -> dict[str, str]:
    return {"templates/system.j2": TEMPLATE, **CORPUS, **extra}


def run_check(*args: str):
    return CliRunner().invoke(main, ["check", *args])


def test_a_good_plugin_passes(tmp_path):
    with temporary_plugin(tmp_path / "p", "wxhelper-chk-good", plugin_source(), files=good_files()) as dist:
        result = run_check(dist)
        as_json = run_check(dist, "--json")
    assert result.exit_code == 0, result.output
    assert "chk (检查): ok; 1 keywords, 1 corpus files, 1 passages" in result.output
    report = json.loads(as_json.output)
    assert report["ok"] is True and as_json.exit_code == 0
    [plugin] = report["plugins"]
    assert plugin["plugin"] == dist and plugin["namespaces"][0]["name"] == "chk"


def test_the_installed_plugins_pass():
    report = check_plugins()
    assert report.ok, report.problems()
    names = {ns.name for p in report.plugins for ns in p.namespaces}
    assert {"car_client", "qzzp", "lvyou"} <= names


BROKEN = {
    "undefined-variable": (plugin_source(), good_files(**{"templates/system.j2": "{{ weather.today }}"}),
                           "system.j2 fails to render with sample data (group chat, full histories): UndefinedError"),
    "syntax-error": (plugin_source(), good_files(**{"templates/part.j2": "{% if %}"}), "part.j2 line 1: syntax error"),
    "empty-corpus": (plugin_source(), {"templates/system.j2": TEMPLATE, "corpus/notes.pdf": "x"},
                     "the corpus is empty"),
    "bad-jsonl": (plugin_source(), good_files(**{"corpus/faq.jsonl": '{"text": "ok"}\nnot json\n'}),
                  "corpus file faq.jsonl fails to parse"),
    "bad-question-line": (plugin_source(), good_files(**{"corpus/guide.md": "# 指南\n\n## 第一节\n\n资料。\n"
                                                                          "<!-- 问法: 咋用 | 怎么用 -->\n"}),
                          "guide.md:6: a question line must come directly under its heading"),
    "filter-raises": (plugin_source(more=", record_filter=lambda text: 1 / 0"), good_files(),
                      "record_filter raised ZeroDivisionError"),
    "name-clash": (plugin_source(name="car_client"), good_files(),
                   "the name 'car_client' is already registered by plugin 'wxhelper-car-client'"),
    "keyword-collision": (plugin_source(keywords=("检查器自检", "过户")), good_files(),
                          "keyword '过户' is also a keyword of namespace 'car_client'"),
    "title-clash": (plugin_source(title="二手车"), good_files(), "title '二手车' is also the name or title"),
    "import-error": ("import no_such_module_for_check\n", {}, "import failed: ModuleNotFoundError"),
    "misspelled-hook": ("from wxhelper import hookimpl\n@hookimpl\ndef register_namespace(register):\n    pass\n",
                        {}, "unknown hook (misspelled?)"),
    "prompt-context-raises": (plugin_source() + "@hookimpl\ndef prompt_context(namespace, message):\n"
                              "    raise KeyError('no city')\n", good_files(), "prompt_context raised KeyError"),
    "no-namespace": ("from wxhelper import hookimpl\n@hookimpl\ndef register_namespaces(register):\n    pass\n",
                     {}, "registered no namespace"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_plugin_fails_with_the_reason(tmp_path, kind):
    source, files, reason = BROKEN[kind]
    with temporary_plugin(tmp_path / "p", f"wxhelper-chk-{kind}", source, files=files or None) as dist:
        result = run_check(dist)
        as_json = json.loads(run_check(dist, "--json").output)
    assert result.exit_code == 1, result.output
    assert reason in result.output, result.output
    assert as_json["ok"] is False and any(reason in p for p in _problems(as_json)), as_json


def _problems(report: dict) -> list[str]:
    out = []
    for plugin in report["plugins"]:
        out += plugin["problems"]
        for ns in plugin["namespaces"]:
            out += ns["problems"]
    return out


def test_warnings_do_not_fail_the_check(tmp_path):
    source = plugin_source(keywords=("检查器自检", "车"))  # one character, and inside 二手车 etc.
    files = good_files(**{"corpus/scan.pdf": "%PDF"})
    with temporary_plugin(tmp_path / "p", "wxhelper-chk-warn", source, files=files) as dist:
        result = run_check(dist)
    assert result.exit_code == 0, result.output
    assert "warning: keyword '车' is one character" in result.output
    assert "warning: keyword '车' occurs inside '二手车'" in result.output
    assert "warning: ignored corpus files" in result.output and "scan.pdf" in result.output
    assert "warning: 1 of 1 sections have no question line" in result.output and "guide.md › 指南 › 第一节" \
        in result.output
    asked = good_files(**{"corpus/guide.md": "# 指南\n\n## 第一节\n<!-- 问法: 咋自检 | 自检怎么弄 -->\n检查器自检的资料。\n"})
    with temporary_plugin(tmp_path / "q", "wxhelper-chk-asked", plugin_source(), files=asked) as dist:
        result = run_check(dist)
    assert result.exit_code == 0 and "question line" not in result.output, result.output


def test_a_distribution_that_is_not_installed_is_a_problem():
    result = run_check("wxhelper-no-such-plugin")
    assert result.exit_code == 1
    assert "no installed distribution 'wxhelper-no-such-plugin'" in result.output


# --------------------------------------------------------------------------- clashes

DUP = plugin_source(name="dupns", title="{title}", keywords=("重名自检",))


@pytest.mark.parametrize("order", ["a-first", "b-first"])
def test_a_clash_is_resolved_by_sorted_distribution_name_whatever_the_order(tmp_path, data_dir, order):
    # "wxhelper-b-dup" sorts before "wxhelper_a-dup" as raw text; normalised names decide: a wins.
    dists = [("wxhelper_a-dup", "甲"), ("wxhelper-b-dup", "乙")]
    if order == "b-first":
        dists.reverse()
    with ExitStack() as stack:
        for i, (dist, title) in enumerate(dists):
            stack.enter_context(temporary_plugin(tmp_path / f"p{i}", dist, DUP.replace("{title}", title),
                                                 files=good_files()))
        allow = [d for d, _ in dists]
        asyncio.run(_assert_a_wins(data_dir, allow))
        runner = CliRunner()
        env = {"WXHELPER_LOAD_PLUGINS": ",".join(allow), "WXHELPER_DATA_DIR": str(data_dir)}
        listed = runner.invoke(main, ["namespaces", "--json"], env=env)
        text = runner.invoke(main, ["namespaces"], env=env)
        lost = run_check("wxhelper-b-dup")
        won = run_check("wxhelper_a-dup")
    rows = json.loads(listed.output)
    winner = [r for r in rows if r["name"] == "dupns" and r["status"] == "loaded"]
    clashed = [r for r in rows if r["status"] == "clashed"]
    assert [r["plugin"] for r in winner] == ["wxhelper_a-dup"] and winner[0]["clashes"] == ["wxhelper-b-dup"]
    assert clashed == [{"name": "dupns", "title": None, "plugin": "wxhelper-b-dup", "version": "0.0.1",
                        "status": "clashed", "winner": "wxhelper_a-dup",
                        "errors": ["namespace 'dupns' is already registered by 'wxhelper_a-dup'; this one is ignored"]}]
    assert "! dupns\twxhelper-b-dup 0.0.1\tclashed\tnamespace 'dupns' is already registered by 'wxhelper_a-dup'" \
        in text.output
    assert "also offered by wxhelper-b-dup: ignored, first registration wins" in text.output
    assert lost.exit_code == 1 and "the name 'dupns' is already registered by plugin 'wxhelper_a-dup'" in lost.output
    assert won.exit_code == 0 and "warning: plugin 'wxhelper-b-dup' also offers a namespace named 'dupns'" \
        in won.output


async def _assert_a_wins(data_dir, allow):
    async with host_for(data_dir, allow) as host:
        assert host.namespaces["dupns"].plugin == "wxhelper_a-dup"
        assert host.namespaces["dupns"].title == "甲"
        loser = host.plugin_statuses["wxhelper-b-dup"]
        assert loser.clashes == {"dupns": "wxhelper_a-dup"}
        assert any("clashes with plugin 'wxhelper_a-dup'" in e for e in loser.errors)


def test_a_plugin_whose_only_namespace_clashed_is_listed(tmp_path, data_dir):
    with temporary_plugin(tmp_path / "p", "wxhelper-zz-dup", plugin_source(name="car_client", title="山寨"),
                          files=good_files()) as dist:
        env = {"WXHELPER_LOAD_PLUGINS": f"{dist},wxhelper-car-client", "WXHELPER_DATA_DIR": str(data_dir)}
        rows = json.loads(CliRunner().invoke(main, ["namespaces", "--json"], env=env).output)
    assert [(r["plugin"], r["status"]) for r in rows if r["name"] == "car_client"] == [
        ("wxhelper-car-client", "loaded"), (dist, "clashed")]


def test_a_clashing_chat_command_is_a_problem(tmp_path):
    source = plugin_source() + ("@hookimpl\ndef register_commands(register):\n"
                                "    register('切换', lambda ctx, args: 'mine')\n")
    with temporary_plugin(tmp_path / "p", "wxhelper-chk-cmd", source, files=good_files()) as dist:
        result = run_check(dist)
    assert result.exit_code == 1
    assert "command /切换 clashes with 'wxhelper'" in result.output
