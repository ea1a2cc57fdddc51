"""The main job end to end: real plugins via entry points, SQLite, embedded Chroma, stand-in LLM."""

from __future__ import annotations

import time

import pytest

from wxhelper import Host, InboundMessage
from wxhelper.routing import UnknownNamespace
from wxhelper.testing import assert_in_prompt, assert_not_in_prompt, host_for, prompt_text

PLUGINS = ["wxhelper-car-client", "wxhelper-qzzp", "wxhelper-lvyou"]


@pytest.mark.parametrize(
    "content, namespace",
    [
        ("二手车过户需要带哪些材料？", "car_client"),
        ("试用期最长可以约定多久？劳动合同怎么签", "qzzp"),
        ("去日本旅游签证怎么办理", "lvyou"),
        ("你好，信息板是什么", "聊天"),
    ],
)
async def test_answers_offline_in_all_four_namespaces(data_dir, content, namespace):
    async with host_for(data_dir, PLUGINS) as host:
        reply = await host.handle(InboundMessage(user_id="alice", content=content))
    assert reply.namespace == namespace
    assert reply.offline is True
    assert reply.text.startswith("（离线模式")
    assert reply.retrieved, "the offline answer quotes the namespace's corpus"
    assert reply.retrieved[0].text in reply.text
    assert reply.recorded == ["chat"]
    assert reply.prompt[0]["role"] == "system" and reply.prompt[-1] == {"role": "user", "content": content}


async def test_private_chat_never_reaches_another_source(data_dir):
    async with host_for(data_dir, []) as host:
        await host.handle(InboundMessage(user_id="alice", content="我的秘密暗号是 ZEBRA-42"))
        await host.handle(InboundMessage(user_id="alice", group_id="g1", content="群里的话 GROUP-ONLY"))
        bob = await host.handle(InboundMessage(user_id="bob", content="你好"))
        group = await host.handle(InboundMessage(user_id="carol", group_id="g1", content="大家好"))
        alice = await host.handle(InboundMessage(user_id="alice", content="还记得吗"))
    assert_not_in_prompt(bob, "ZEBRA-42", "GROUP-ONLY")
    assert_not_in_prompt(group, "ZEBRA-42")
    assert_in_prompt(group, "alice：群里的话 GROUP-ONLY")
    assert_in_prompt(alice, "ZEBRA-42")
    assert_not_in_prompt(alice, "GROUP-ONLY")
    assert alice.source_id == "alice" and group.source_id == "g1"


async def test_group_id_equal_to_user_id_is_a_private_chat(data_dir):
    async with host_for(data_dir, []) as host:
        reply = await host.handle(InboundMessage(user_id="dave", group_id="dave", content="你好"))
    assert reply.source_id == "dave"


async def test_board_is_shared_across_sources_and_bots_but_not_namespaces(data_dir):
    async with host_for(data_dir, PLUGINS) as host:
        ad = await host.handle(InboundMessage(bot_id="bot-a", user_id="seller", group_id="g1",
                                              content="出售二手车 2019款丰田卡罗拉，6万公里，电话 138-1234-5678"))
        no_phone = await host.handle(InboundMessage(bot_id="bot-a", user_id="seller2", group_id="g1",
                                                    content="出售二手车 本田雅阁，私聊"))
        buyer = await host.handle(InboundMessage(bot_id="bot-b", user_id="buyer", content="想买二手车，预算7万"))
        travel = await host.handle(InboundMessage(bot_id="bot-b", user_id="buyer", content="去云南旅游攻略"))
    assert ad.recorded == ["chat", "namespace"]
    assert no_phone.recorded == ["chat"]
    assert_in_prompt(buyer, "138-1234-5678")
    assert_not_in_prompt(buyer, "本田雅阁")
    assert_not_in_prompt(travel, "138-1234-5678")
    async with host_for(data_dir, PLUGINS) as host:
        board = await host.history("car_client", "namespace")
    assert [r.user_id for r in board] == ["seller"]
    assert board[0].source_id == "g1" and board[0].bot_id == "bot-a"


async def test_friend_circle_posts_are_recorded_not_answered(data_dir):
    async with host_for(data_dir, PLUGINS) as host:
        post = await host.handle(InboundMessage(user_id="f1", channel="friend_circle",
                                                content="自驾游拼车去稻城亚丁，还差两人，电话13900001111"))
        junk = await host.handle(InboundMessage(user_id="f2", channel="friend_circle", content="今天去旅游了"))
        ask = await host.handle(InboundMessage(user_id="u9", content="有人拼车去稻城旅游吗"))
        circle = await host.history("lvyou", "friend_circle")
        board = await host.history("lvyou", "namespace")
    assert post.answered is False and post.text == "" and post.recorded == ["friend_circle"]
    assert junk.recorded == []
    assert [r.user_id for r in circle] == ["f1"]
    assert board == []
    assert_in_prompt(ask, "13900001111")


async def test_two_bots_in_one_group_keep_separate_chats_unless_shared(data_dir, tmp_path):
    async with host_for(data_dir, []) as host:
        await host.handle(InboundMessage(bot_id="A", user_id="u", group_id="g", content="对A说 ALPHA"))
        b = await host.handle(InboundMessage(bot_id="B", user_id="u", group_id="g", content="对B说"))
    assert_not_in_prompt(b, "ALPHA")
    async with host_for(tmp_path / "shared", [], share_chat_across_bots=True) as host:
        await host.handle(InboundMessage(bot_id="A", user_id="u", group_id="g", content="对A说 ALPHA"))
        b = await host.handle(InboundMessage(bot_id="B", user_id="u", group_id="g", content="对B说"))
    assert_in_prompt(b, "ALPHA")


async def test_long_message_is_stored_truncated_and_the_reply_says_so(data_dir):
    async with host_for(data_dir, [], max_single_char=50) as host:
        reply = await host.handle(InboundMessage(user_id="u", content="长" * 80 + " 13812345678"))
        chat = await host.history("聊天", "chat", source_id="u")
    assert reply.truncated is True
    assert "已截断" in reply.text and "50" in reply.text
    assert chat[0].content == "长" * 50
    assert reply.recorded == ["chat"]  # the phone number was cut off, so it is not a board post


async def test_oldest_records_drop_beyond_max_user_record_count(data_dir):
    async with host_for(data_dir, [], max_user_record_count=3) as host:
        for i in range(6):
            await host.handle(InboundMessage(user_id="u", group_id="g", content=f"帖子{i} 电话13812345678",
                                             timestamp=time.time() - 100 + i))
        board = await host.history("聊天", "namespace")
    assert [r.content.split()[0] for r in board] == ["帖子3", "帖子4", "帖子5"]


async def test_records_older_than_clear_cycle_never_reach_a_prompt_and_are_purged(data_dir):
    old = time.time() - 8 * 86400
    async with host_for(data_dir, []) as host:
        await host.handle(InboundMessage(user_id="u", group_id="g", content="旧帖 OLDPOST 13812345678",
                                         timestamp=old))
        await host.handle(InboundMessage(user_id="v", group_id="g", content="新帖 NEWPOST 13912345678"))
        reply = await host.handle(InboundMessage(user_id="w", content="有什么帖子"))
        from wxhelper.storage import HistoryKey

        before = await host.store.count(HistoryKey.shared("namespace", "聊天"))
        purged = await host.purge_expired()
        after = await host.store.count(HistoryKey.shared("namespace", "聊天"))
    assert_not_in_prompt(reply, "OLDPOST")
    assert_in_prompt(reply, "NEWPOST")
    assert before == 2 and after == 1 and purged >= 1


async def test_template_syntax_in_user_text_reaches_the_llm_literally(data_dir, fake_llm):
    async with host_for(data_dir, [], llm=fake_llm) as host:
        await host.handle(InboundMessage(user_id="u", group_id="g", content="{{ 7*7 }} {{ 'PWN' ~ 'ED' }} {% if true %}x{% endif %} 13812345678"))
        reply = await host.handle(InboundMessage(user_id="v", group_id="g", content="{{ 7*7 }}"))
    sent = fake_llm.chat_requests()[-1]["messages"]
    text = "\n".join(m["content"] for m in sent)
    assert "{{ 7*7 }} {{ 'PWN' ~ 'ED' }} {% if true %}x{% endif %}" in text
    # "PWNED" only exists if the text was evaluated; "49" could be the clock's minutes.
    assert "PWNED" not in text
    assert reply.text == "LLM-ANSWER: v：{{ 7*7 }}"


async def test_llm_request_shape_and_reply(data_dir, fake_llm):
    async with host_for(data_dir, PLUGINS, llm=fake_llm, model="test-model") as host:
        reply = await host.handle(InboundMessage(user_id="u", content="二手车估价看哪些因素"))
        second = await host.handle(InboundMessage(user_id="u", content="那过户呢，二手车"))
    assert reply.offline is False and reply.text == "LLM-ANSWER: 二手车估价看哪些因素"
    body = fake_llm.chat_requests()[0]
    assert body["model"] == "test-model"
    assert body["messages"][0]["role"] == "system" and "二手车" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "二手车估价看哪些因素"}
    assert fake_llm.requests[0]["headers"]["authorization"] == f"Bearer {fake_llm.api_key}"
    roles = [m["role"] for m in fake_llm.chat_requests()[1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert second.prompt[2] == {"role": "assistant", "content": reply.text}


async def test_streaming_from_the_llm_gives_the_same_reply(data_dir, fake_llm):
    async with host_for(data_dir, [], llm=fake_llm, llm_stream=True) as host:
        reply = await host.handle(InboundMessage(user_id="u", content="讲一个很长很长的故事" * 3))
    assert fake_llm.chat_requests()[0]["stream"] is True
    assert reply.text == "LLM-ANSWER: " + "讲一个很长很长的故事" * 3


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_llm_errors_fall_back_to_an_apology_with_the_offline_answer(data_dir, fake_llm, status):
    fake_llm.fail_next(status, count=10)
    async with host_for(data_dir, PLUGINS, llm=fake_llm) as host:
        reply = await host.handle(InboundMessage(user_id="u", content="二手车过户需要什么材料 电话13812345678"))
        board = await host.history("car_client", "namespace")
    assert reply.offline is True and "llm" in reply.degraded
    assert reply.text.startswith("抱歉")
    assert reply.recorded == ["chat", "namespace"] and len(board) == 1


async def test_broken_stream_falls_back(data_dir, fake_llm):
    fake_llm.break_stream_next(after_chunks=1)
    async with host_for(data_dir, [], llm=fake_llm, llm_stream=True) as host:
        reply = await host.handle(InboundMessage(user_id="u", content="你好你好你好你好你好你好你好"))
    assert reply.offline is True and "llm" in reply.degraded


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_routing_order_explicit_then_binding_then_keywords(data_dir, backend, request):
    # over Redis the binding is read in the same call that begins the message's turn
    store = {} if backend == "sqlite" else {"store": f"{request.getfixturevalue('redis_url')}?prefix=route{id(data_dir)}:"}
    async with host_for(data_dir, PLUGINS, **store) as host:
        assert (await host.handle(InboundMessage(user_id="u", content="二手车", namespace="lvyou"))).namespace == "lvyou"
        assert (await host.handle(InboundMessage(user_id="u", content="随便", namespace="求职招聘"))).namespace == "qzzp"
        await host.store.set_binding("u", host.settings.bot_id, "qzzp")
        assert (await host.handle(InboundMessage(user_id="u", content="二手车过户"))).namespace == "qzzp"
        other = await host.handle(InboundMessage(user_id="v", content="二手车过户"))
        assert other.namespace == "car_client"
        with pytest.raises(UnknownNamespace, match="nope"):
            await host.handle(InboundMessage(user_id="u", content="hi", namespace="nope"))


async def test_allow_list_loads_only_named_plugins(data_dir):
    async with host_for(data_dir, ["wxhelper_qzzp"]) as host:
        assert set(host.namespaces) == {"聊天", "qzzp"}
    async with host_for(data_dir, []) as host:
        assert set(host.namespaces) == {"聊天"}
    async with host_for(data_dir, None) as host:
        assert {"聊天", "car_client", "qzzp", "lvyou"} <= set(host.namespaces)


async def test_default_namespace_name_follows_the_setting(data_dir):
    async with host_for(data_dir, [], default_namespace="general") as host:
        reply = await host.handle(InboundMessage(user_id="u", content="hello"))
    assert reply.namespace == "general"


async def test_operator_template_override(data_dir, tmp_path):
    override = tmp_path / "tpl" / "car_client"
    override.mkdir(parents=True)
    (override / "system.j2").write_text("OPERATOR PROMPT for {{ namespace.title }} {{ board|length }}", encoding="utf-8")
    async with host_for(data_dir, PLUGINS, templates_dir=tmp_path / "tpl") as host:
        car = await host.handle(InboundMessage(user_id="u", content="二手车估价"))
        trip = await host.handle(InboundMessage(user_id="u", content="旅游签证"))
    assert car.prompt[0]["content"] == "OPERATOR PROMPT for 二手车 0"
    assert "OPERATOR PROMPT" not in trip.prompt[0]["content"]


def test_sync_wrapper(data_dir):
    from wxhelper import SyncHost
    from wxhelper.testing import make_settings

    with SyncHost(make_settings(data_dir, [])) as host:
        reply = host.handle({"user_id": "u", "content": "你好 13812345678"})
        assert reply.recorded == ["chat", "namespace"]
        assert [r.user_id for r in host.history("聊天")] == ["u"]


async def test_bad_input_names_the_field(data_dir):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="content"):
        InboundMessage(user_id="u", content="   ")
    with pytest.raises(ValidationError, match="user_id"):
        InboundMessage(user_id="x" * 300, content="hi")
    with pytest.raises(ValidationError, match="channel"):
        InboundMessage(user_id="u", content="hi", channel="email")
    async with host_for(data_dir, []) as host:
        with pytest.raises(ValidationError, match="user_id"):
            await host.handle({"content": "hi"})


async def test_stream_yields_pieces_then_the_reply(data_dir, fake_llm):
    async with host_for(data_dir, [], llm=fake_llm) as host:
        items = [item async for item in host.stream(InboundMessage(user_id="u", content="一二三四五六七八九十" * 2))]
    *pieces, reply = items
    assert len(pieces) > 2 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == reply.text == "LLM-ANSWER: " + "一二三四五六七八九十" * 2
    assert reply.recorded == ["chat"] and {"history", "retrieval", "assembly", "llm", "total"} <= set(reply.timings)


async def test_stream_offline_and_broken_midway(data_dir, fake_llm):
    async with host_for(data_dir, []) as host:
        *pieces, reply = [i async for i in host.stream(InboundMessage(user_id="u", content="信息板"))]
    assert reply.offline and "".join(pieces) == reply.text and reply.text.startswith("（离线模式")
    fake_llm.break_stream_next(after_chunks=2)
    async with host_for(data_dir, [], llm=fake_llm) as host:
        *pieces, reply = [i async for i in host.stream(InboundMessage(user_id="u", content="讲个很长的故事吧" * 4))]
    assert "llm" in reply.degraded and "".join(pieces) == reply.text and "抱歉" in reply.text
    async with host_for(data_dir, [], max_single_char=5) as host:
        *pieces, reply = [i async for i in host.stream(InboundMessage(user_id="u", content="一二三四五六七"))]
    assert reply.truncated and "".join(pieces) == reply.text and "已截断" in reply.text


async def test_the_messages_being_handled_are_counted_for_the_question_batching(data_dir, fake_llm):
    """The knowledge base's question batching waits for company only while the host handles other
    messages: the count covers every message from its start to its answer, and falls back to 0
    after answers, a refused message and a stream given up midway."""
    import asyncio

    seen: list[tuple[int, int]] = []
    async with host_for(data_dir, [], llm=fake_llm) as host:
        host.add_observer(lambda msg, reply, turn: seen.append((host.handling, host.knowledge.company())))
        assert host.handling == 0
        await asyncio.gather(*(host.handle(InboundMessage(user_id=f"u{i}", content=f"第{i}个问题：信息板是什么"))
                               for i in range(4)))
        assert len(seen) == 4 and all(n >= 1 and n == company for n, company in seen)
        assert host.handling == 0
        with pytest.raises(UnknownNamespace):
            await host.handle(InboundMessage(user_id="u", content="你好", namespace="nope"))
        assert host.handling == 0
        stream = host.stream(InboundMessage(user_id="u", content="讲个很长的故事吧" * 4))
        assert isinstance(await stream.__anext__(), str) and host.handling == 1
        await stream.aclose()
        assert host.handling == 0


async def test_a_wrong_namespace_guess_reads_and_searches_the_namespace_the_source_has(data_dir, redis_url):
    """The host guesses a message's namespace before its turn begins (to search meanwhile and have the
    store make the fair reads in the turn's first round trip); a source bound by another process is
    answered from its bound namespace all the same, and the next guess is right."""
    store = f"{redis_url}?prefix=guess{id(data_dir)}:"
    async with host_for(data_dir, PLUGINS, store=store) as host:
        await host.handle(InboundMessage(user_id="seller", content="出售二手车 卡罗拉 电话 13812345678",
                                         namespace="car_client"))
        await host.handle(InboundMessage(user_id="hr", content="招聘会计 月薪八千 电话 13912345678", namespace="qzzp"))
        content = "二手车过户要带什么材料"
        first = await host.handle(InboundMessage(user_id="s", content=content))
        assert first.namespace == "car_client"  # unbound: the keywords
        assert_in_prompt(first, "13812345678")
        assert_not_in_prompt(first, "13912345678")

        await host.store.set_binding("s", host.settings.bot_id, "qzzp")  # as /切换 in another worker would
        separate_reads = []
        read_many = host.store.fair_read_many

        async def counted(reads):  # type: ignore[no-untyped-def]
            separate_reads.append([key.namespace for key, _ in reads])
            return await read_many(reads)

        host.store.fair_read_many = counted  # type: ignore[method-assign]
        bound = await host.handle(InboundMessage(user_id="s", content=content))
        assert bound.namespace == "qzzp"
        assert_in_prompt(bound, "13912345678")
        assert_not_in_prompt(bound, "13812345678")
        settings = host.settings
        assert bound.retrieved == await host.knowledge.search(host.namespace("qzzp"), content,
                                                              settings.knowledge_top_k, settings.knowledge_chars)
        assert separate_reads == [["qzzp", "qzzp", "qzzp"]]  # the guess (car_client) was read again for qzzp

        again = await host.handle(InboundMessage(user_id="s", content=content + "？"))
        assert again.namespace == "qzzp" and "13912345678" in prompt_text(again)
        assert [m["content"] for m in again.prompt[1:3]] == [content, bound.text]  # the chat of this source
        assert separate_reads == [["qzzp", "qzzp", "qzzp"]]  # guessed right: read in the turn's first round trip
