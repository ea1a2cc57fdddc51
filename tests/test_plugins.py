"""Plugin loading: bad plugins are reported by name and never take the host down."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wxhelper import InboundMessage
from wxhelper.testing import host_for, temporary_plugin

GOOD = """
from pathlib import Path
from wxhelper import hookimpl, Namespace
HERE = Path(__file__).parent
@hookimpl
def register_namespaces(register):
    register(Namespace(name="{name}", title="{title}", keywords=("{kw}",), templates_dir=HERE / "templates"))
"""
TEMPLATE = {"templates/system.j2": "SYSTEM OF {{ namespace.name }}"}


async def test_a_good_temporary_plugin_answers(data_dir, tmp_path):
    with temporary_plugin(tmp_path / "p", "wxhelper-good", GOOD.format(name="good", title="好", kw="GOODKW"),
                          files=TEMPLATE) as dist:
        async with host_for(data_dir, [dist]) as host:
            reply = await host.handle(InboundMessage(user_id="u", content="GOODKW please"))
            assert reply.namespace == "good"
            assert reply.prompt[0]["content"] == "SYSTEM OF good"
            assert host.plugin_statuses[dist].status == "loaded"


BROKEN = {
    "import-error": ("import nonexistent_module_xyz\n", "import failed: ModuleNotFoundError"),
    "raises": ("from wxhelper import hookimpl\n@hookimpl\ndef register_namespaces(register):\n"
               "    raise RuntimeError('boom in plugin')\n", "register_namespaces raised RuntimeError: boom in plugin"),
    "misspelled": ("from wxhelper import hookimpl\n@hookimpl\ndef register_namespace(register):\n    pass\n",
                   "unknown hook"),
    "bad-args": ("from wxhelper import hookimpl\n@hookimpl\ndef register_namespaces(registr):\n    pass\n",
                 "invalid hook implementation"),
    "junk": ("from wxhelper import hookimpl\n@hookimpl\ndef register_namespaces(register):\n"
             "    register({'name': 'x'})\n", "takes a wxhelper.Namespace, got dict"),
    "no-template": ("from pathlib import Path\nfrom wxhelper import hookimpl, Namespace\n@hookimpl\n"
                    "def register_namespaces(register):\n"
                    "    register(Namespace(name='nt', title='nt', templates_dir=Path('/nonexistent')))\n",
                    "has no system.j2"),
    "bad-name": ("from wxhelper import hookimpl, Namespace\n@hookimpl\ndef register_namespaces(register):\n"
                 "    register(Namespace(name='has space', title='t'))\n", "namespace name 'has space' is invalid"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
async def test_a_broken_plugin_is_reported_and_the_rest_keep_working(data_dir, tmp_path, kind):
    source, reason = BROKEN[kind]
    with temporary_plugin(tmp_path / "p", f"wxhelper-broken-{kind}", source) as dist:
        async with host_for(data_dir, [dist, "wxhelper-car-client"]) as host:
            status = host.plugin_statuses[dist]
            assert status.status == "failed", status
            assert any(reason in e for e in status.errors), status.errors
            assert set(host.namespaces) == {"聊天", "car_client"}
            reply = await host.handle(InboundMessage(user_id="u", content="二手车过户要什么"))
            assert reply.namespace == "car_client" and reply.text


async def test_namespace_clash_first_registration_wins_and_is_reported(data_dir, tmp_path):
    clash = GOOD.format(name="car_client", title="山寨二手车", kw="zzz")
    with temporary_plugin(tmp_path / "p", "wxhelper-zz-clash", clash, files=TEMPLATE) as dist:
        async with host_for(data_dir, ["wxhelper-car-client", dist]) as host:
            assert host.namespaces["car_client"].plugin == "wxhelper-car-client"
            errors = host.plugin_statuses[dist].errors
            assert any("clashes with plugin 'wxhelper-car-client'" in e for e in errors), errors


async def test_a_raising_record_filter_records_nothing_shared(data_dir, tmp_path):
    source = GOOD.format(name="flt", title="flt", kw="FLT").replace(
        'templates_dir=HERE / "templates"', 'templates_dir=HERE / "templates", record_filter=lambda t: 1 / 0')
    with temporary_plugin(tmp_path / "p", "wxhelper-flt", source, files=TEMPLATE) as dist:
        async with host_for(data_dir, [dist]) as host:
            reply = await host.handle(InboundMessage(user_id="u", content="FLT 13812345678"))
    assert reply.recorded == ["chat"]
    assert f"plugin:{dist}" in reply.degraded


async def test_a_template_that_fails_to_render_falls_back_to_the_default(data_dir, tmp_path):
    files = {"templates/system.j2": "{{ no_such_variable.attr }}"}
    with temporary_plugin(tmp_path / "p", "wxhelper-badtpl", GOOD.format(name="bt", title="bt", kw="BTKW"),
                          files=files) as dist:
        async with host_for(data_dir, [dist]) as host:
            reply = await host.handle(InboundMessage(user_id="u", content="BTKW hello"))
    assert reply.namespace == "bt"
    assert f"plugin:{dist}" in reply.degraded
    assert "智能助手" in reply.prompt[0]["content"]  # the host's default system template


async def test_prompt_context_hook_reaches_templates_and_a_raising_one_degrades(data_dir, tmp_path):
    source = GOOD.format(name="ctx", title="ctx", kw="CTXKW") + """
@hookimpl
def prompt_context(namespace, message):
    if namespace.name == "ctx":
        return {"weather": "晴"}
    return None
"""
    files = {"templates/system.j2": "weather={{ extra.weather }}"}
    with temporary_plugin(tmp_path / "p", "wxhelper-ctx", source, files=files) as dist:
        async with host_for(data_dir, [dist]) as host:
            reply = await host.handle(InboundMessage(user_id="u", content="CTXKW"))
    assert reply.prompt[0]["content"] == "weather=晴"
    bad = "from wxhelper import hookimpl\n@hookimpl\ndef prompt_context(namespace, message):\n    raise KeyError('x')\n"
    with temporary_plugin(tmp_path / "q", "wxhelper-badctx", bad) as dist:
        async with host_for(data_dir, [dist]) as host:
            reply = await host.handle(InboundMessage(user_id="u", content="hi"))
    assert f"plugin:{dist}" in reply.degraded and reply.text


def test_cli_namespaces_shows_a_broken_plugin(tmp_path):
    """One bad plugin must not break the CLI (the complaint in simonw/llm issue 1280)."""
    plugin_dir = tmp_path / "p"
    with temporary_plugin(plugin_dir, "wxhelper-cli-broken", "raise ImportError('kaput')\n"):
        env = dict(os.environ, PYTHONPATH=str(plugin_dir), WXHELPER_DATA_DIR=str(tmp_path / "d"),
                   WXHELPER_LOAD_PLUGINS="wxhelper-cli-broken,wxhelper-lvyou")
        out = subprocess.run([sys.executable, "-m", "wxhelper", "namespaces", "--json"], env=env,
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    broken = [r for r in rows if r["plugin"] == "wxhelper-cli-broken"]
    assert broken and broken[0]["status"] == "failed" and "kaput" in broken[0]["errors"][0]
    assert {r["name"] for r in rows if r["status"] == "loaded"} == {"聊天", "lvyou"}


@pytest.mark.parametrize("dist, text", [("wxhelper-car-client", "二手车 卡罗拉 出售 13812345678"),
                                        ("wxhelper-qzzp", "招聘司机 月薪8000 13812345678"),
                                        ("wxhelper-lvyou", "旅游 拼车去稻城亚丁 13812345678")])
async def test_shipped_prompts_keep_list_items_and_headings_on_their_own_lines(data_dir, dist, text):
    """Under the host's trim_blocks/lstrip_blocks a `{%-` tag glues lines together; catch that."""
    import re

    async with host_for(data_dir, [dist], embedding="hashed") as host:
        await host.handle(InboundMessage(user_id="s", group_id="g", content=text))
        reply = await host.handle(InboundMessage(user_id="u", group_id="g", content=text))
    system = reply.prompt[0]["content"]
    assert "13812345678" in system
    assert not re.search(r"[。！？：）)][-#]+ ", system), system
