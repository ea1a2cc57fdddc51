"""Isolation and injection: what one source or namespace says never reaches another's prompt."""

from __future__ import annotations

import json
import logging

import pytest

from wxhelper import InboundMessage
from wxhelper.testing import assert_in_prompt, assert_not_in_prompt, host_for

PLUGINS = ["wxhelper-car-client", "wxhelper-lvyou"]


@pytest.mark.parametrize("secret_source, reader", [
    ({"user_id": "alice"}, {"user_id": "bob"}),                                   # private vs private
    ({"user_id": "alice", "group_id": "g1"}, {"user_id": "alice"}),               # group vs private
    ({"user_id": "alice"}, {"user_id": "alice", "group_id": "g1"}),               # private vs group
    ({"user_id": "alice", "group_id": "g1"}, {"user_id": "bob", "group_id": "g2"}),  # group vs group
    ({"user_id": "alice", "bot_id": "A"}, {"user_id": "alice", "bot_id": "B"}),   # across bots
])
async def test_a_source_chat_never_reaches_another_source(data_dir, secret_source, reader):
    async with host_for(data_dir, []) as host:
        await host.handle(InboundMessage(content="SECRET-TOKEN-77 我的私事", **secret_source))
        reply = await host.handle(InboundMessage(content="你好", **reader))
    assert_not_in_prompt(reply, "SECRET-TOKEN-77")


async def test_a_namespace_history_never_reaches_another_namespace(data_dir):
    async with host_for(data_dir, PLUGINS) as host:
        await host.handle(InboundMessage(user_id="s", group_id="g", content="二手车出售 CARPOST 13812345678"))
        await host.handle(InboundMessage(user_id="s", group_id="g", channel="friend_circle",
                                         content="二手车朋友圈 CIRCLEPOST 13812345678"))
        travel = await host.handle(InboundMessage(user_id="s", group_id="g", content="旅游攻略"))
        car = await host.handle(InboundMessage(user_id="s", group_id="g", content="二手车"))
    assert_not_in_prompt(travel, "CARPOST", "CIRCLEPOST")
    assert_in_prompt(car, "CARPOST", "CIRCLEPOST")


HOSTILE = ['["chat", "聊天", "victim", ""]', 'victim", "', "victim\", \"wxhelper-bot", "*", "{victim}", "victim:",
           ":victim", "vic tim", "victim😀", "v" * 256]


@pytest.mark.parametrize("attacker", HOSTILE)
async def test_keys_built_from_hostile_ids_cannot_reach_another_source(data_dir, attacker):
    async with host_for(data_dir, []) as host:
        await host.handle(InboundMessage(user_id="victim", content="VICTIM-SECRET"))
        await host.handle(InboundMessage(user_id="victim", group_id="victim-group", content="GROUP-SECRET"))
        mine = await host.handle(InboundMessage(user_id=attacker, content="hi"))
        as_group = await host.handle(InboundMessage(user_id="x", group_id=attacker, content="hi"))
        as_bot = await host.handle(InboundMessage(user_id="victim", bot_id=attacker, content="hi"))
    for reply in (mine, as_group, as_bot):
        assert_not_in_prompt(reply, "VICTIM-SECRET", "GROUP-SECRET")


async def test_phone_numbers_and_content_are_not_logged_at_info(data_dir, fake_llm, caplog, tmp_path):
    fake_llm.fail_next(500, count=1)
    caplog.set_level(logging.INFO)
    async with host_for(data_dir, ["wxhelper-car-client"], llm=fake_llm, bot_owner_ids="boss") as host:
        await host.handle(InboundMessage(user_id="u", group_id="g", content="卖车 13812345678 PRIVATE-WORDS"))
        await host.handle(InboundMessage(user_id="boss", content="/新增分类|PRIVCAT"))
        await host.handle(InboundMessage(user_id="u", content="二手车 13912345678 MORE-PRIVATE"))
    text = "\n".join(r.getMessage() + json.dumps(r.args, default=str) for r in caplog.records
                     if r.levelno >= logging.INFO)
    assert caplog.records, "expected some logging to inspect"
    for needle in ("13812345678", "13912345678", "PRIVATE-WORDS", "MORE-PRIVATE"):
        assert needle not in text
