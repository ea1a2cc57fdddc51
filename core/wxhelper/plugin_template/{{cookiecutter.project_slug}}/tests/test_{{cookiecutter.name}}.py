"""Tests for the {{ cookiecutter.name }} ({{ cookiecutter.title }}) namespace, run in a real wxhelper host.

Install the plugin first (``python -m pip install -e '.[test]'``): the host finds it through its
``wxhelper`` entry point, exactly as it will in production. Then ``python -m pytest``.
"""

from __future__ import annotations

from wxhelper.check import check_plugins
from wxhelper.testing import FakeLLM, assert_in_prompt, assert_not_in_prompt, host_for, render_system_prompt

from {{ cookiecutter.package }} import KEYWORDS, NAME, TITLE

DIST = "{{ cookiecutter.project_slug }}"
{% raw -%}
QUESTION = f"{KEYWORDS[0]}有什么要注意的？"  # carries one of the keywords, so it is routed here


async def test_the_namespace_is_registered(tmp_path):
    async with host_for(tmp_path, plugins=[DIST]) as host:  # only this plugin (and the default namespace)
        ns = host.namespaces[NAME]
        status = host.plugin_statuses[ns.plugin]
    assert ns.title == TITLE
    assert status.status == "loaded" and not status.errors, status.errors


async def test_a_message_with_a_keyword_is_answered_from_the_corpus(tmp_path):
    async with host_for(tmp_path, plugins=[DIST]) as host:  # no LLM given: the host answers offline
        reply = await host.handle({"user_id": "u1", "content": QUESTION})
    assert reply.namespace == NAME
    assert reply.retrieved, "nothing was retrieved from corpus/"
    assert reply.offline and reply.text


async def test_the_prompt_reaches_the_llm(tmp_path):
    with FakeLLM(reply="好的") as llm:  # an OpenAI-compatible server on loopback
        async with host_for(tmp_path, plugins=[DIST], llm=llm) as host:
            reply = await host.handle({"user_id": "u1", "group_id": "g1", "content": QUESTION})
    assert reply.text == "好的" and not reply.offline
    system = llm.chat_requests()[0]["messages"][0]
    assert system["role"] == "system" and TITLE in system["content"]
    assert_in_prompt(reply, f"「{TITLE}」频道", "群聊", "## 参考资料", f"u1：{QUESTION}")


async def test_only_posts_with_a_phone_number_are_shared_with_other_chats(tmp_path):
    async with host_for(tmp_path, plugins=[DIST]) as host:
        chatter = await host.handle({"user_id": "u1", "group_id": "g1", "content": f"{KEYWORDS[0]}，有人在吗"})
        post = await host.handle({"user_id": "u2", "group_id": "g1", "content": f"{KEYWORDS[0]}，联系13812345678"})
        later = await host.handle({"user_id": "u3", "content": f"{KEYWORDS[0]}，谁能帮忙？"})  # a private chat
    assert chatter.recorded == ["chat"]
    assert "namespace" in post.recorded
    assert_in_prompt(later, "13812345678")  # the board is shared across chats
    assert_not_in_prompt(later, "有人在吗")  # a group's chat history is not


def test_the_system_prompt_renders_with_sample_data():
    text = render_system_prompt(NAME, plugins=[DIST])  # a group chat with full histories
    assert TITLE in text and "群聊" in text
    assert "13912345678" in text  # a board post, quoted
    assert "{{ 7*7 }}" in text  # user text stays data
    text = render_system_prompt(NAME, plugins=[DIST], group=False, empty=True)
    assert "私聊" in text and "## 信息板" not in text


def test_wxhelper_check_finds_no_problem():
    report = check_plugins([DIST])  # the same as `wxhelper check`, against every installed plugin
    assert report.ok, "\n".join(report.problems())
{%- endraw %}
