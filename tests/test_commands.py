"""Chat commands: categories, switching, owner-only changes, plugin commands."""

from __future__ import annotations

from wxhelper import InboundMessage
from wxhelper.testing import host_for, temporary_plugin

PLUGINS = ["wxhelper-car-client", "wxhelper-qzzp", "wxhelper-lvyou"]
OWNER = "boss"


def msg(content: str, user: str = "u1", group: str | None = "g1", **kw) -> InboundMessage:
    return InboundMessage(user_id=user, group_id=group, content=content, **kw)


async def test_list_and_switch_categories_never_reach_the_llm_or_histories(data_dir, fake_llm):
    async with host_for(data_dir, PLUGINS, llm=fake_llm) as host:
        listing = await host.handle(msg("/分类"))
        switched = await host.handle(msg("/切换|二手车"))
        after = await host.handle(msg("随便问问"))
        other_group = await host.handle(msg("随便问问", group="g2"))
        chat = await host.history("car_client", "chat", source_id="g1")
    assert listing.command == "分类" and "二手车" in listing.text and "求职招聘" in listing.text
    assert switched.command == "切换" and "二手车" in switched.text
    assert after.namespace == "car_client" and other_group.namespace == "聊天"
    assert listing.recorded == [] and switched.recorded == []
    assert len(fake_llm.chat_requests()) == 2  # only the two ordinary messages
    assert [r.content for r in chat if r.user_id == "u1"] == ["随便问问"]


async def test_switch_by_name_and_unknown(data_dir):
    async with host_for(data_dir, PLUGINS) as host:
        ok = await host.handle(msg("/切换|qzzp"))
        bad = await host.handle(msg("/切换|不存在"))
        usage = await host.handle(msg("/切换"))
        routed = await host.handle(msg("随便"))
    assert "求职招聘" in ok.text and "没有名为「不存在」" in bad.text and "用法" in usage.text
    assert routed.namespace == "qzzp"


async def test_only_owners_add_and_delete_categories(data_dir):
    async with host_for(data_dir, PLUGINS, bot_owner_ids=f"{OWNER},other-owner") as host:
        refused = await host.handle(msg("/新增分类|宠物"))
        assert "只有机器人的主人" in refused.text
        assert "宠物" not in await host.namespaces_for(host.settings.bot_id)

        added = await host.handle(msg("/新增分类|宠物", user=OWNER))
        assert "已新增" in added.text
        again = await host.handle(msg("/新增分类|宠物", user=OWNER))
        assert "已经存在" in again.text
        listing = await host.handle(msg("/分类"))
        assert "宠物 [自定义]" in listing.text

        post = await host.handle(msg("宠物寄养，猫狗都收，电话13812345678", user="u2"))
        assert post.namespace == "宠物" and post.recorded == ["chat", "namespace"]
        assert len(await host.history("宠物")) == 1

        refused_delete = await host.handle(msg("/删除分类|宠物|确认", user="u2"))
        assert "只有机器人的主人" in refused_delete.text
        assert len(await host.history("宠物")) == 1
        preset = await host.handle(msg("/删除分类|二手车|确认", user=OWNER))
        assert "预置分类，不能删除" in preset.text
        ask = await host.handle(msg("/删除分类|宠物", user=OWNER))
        assert "确认请发送：/删除分类|宠物|确认" in ask.text
        assert len(await host.history("宠物")) == 1  # nothing dropped without the confirmation
        deleted = await host.handle(msg("/删除分类|宠物|确认", user=OWNER))
        assert "已删除" in deleted.text
        assert "宠物" not in await host.namespaces_for(host.settings.bot_id)
        after = await host.handle(msg("宠物寄养 13912345678", user="u3"))
        assert after.namespace == "聊天"


async def test_custom_categories_are_per_bot_and_shown_by_the_cli(data_dir):
    async with host_for(data_dir, [], bot_owner_ids=OWNER) as host:
        await host.handle(msg("/新增分类|钓鱼", user=OWNER, bot_id="botA"))
        a = await host.handle(msg("钓鱼去哪", bot_id="botA"))
        b = await host.handle(msg("钓鱼去哪", bot_id="botB"))
    assert a.namespace == "钓鱼" and b.namespace == "聊天"
    import json
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "wxhelper", "namespaces", "--json"], capture_output=True, text=True,
                         env=dict(os.environ, WXHELPER_DATA_DIR=str(data_dir), WXHELPER_LOAD_PLUGINS=""),
                         cwd=data_dir, timeout=120)
    assert out.returncode == 0, out.stderr
    custom = [r for r in json.loads(out.stdout) if r["plugin"] == "custom"]
    assert [(r["name"], r["bot_id"]) for r in custom] == [("钓鱼", "botA")]


async def test_bad_category_names_are_refused(data_dir):
    async with host_for(data_dir, [], bot_owner_ids=OWNER) as host:
        reply = await host.handle(msg("/新增分类|a b", user=OWNER))
    assert "不能包含空格" in reply.text


async def test_plugins_contribute_commands_and_a_raising_one_degrades(data_dir, tmp_path):
    source = """
from wxhelper import hookimpl

def weather(ctx, args):
    return f"{ctx.source_id} 天气：{args[0] if args else '晴'}"

async def secret(ctx, args):
    return "owner only"

def broken(ctx, args):
    raise RuntimeError("nope")

@hookimpl
def register_commands(register):
    register("天气", weather, help="查天气")
    register("秘密", secret, owner_only=True)
    register("坏", broken)
    register("分类", weather)  # clashes with the built-in: reported, ignored
"""
    with temporary_plugin(tmp_path / "p", "wxhelper-cmds", source) as dist:
        async with host_for(data_dir, [dist], bot_owner_ids=OWNER) as host:
            weather = await host.handle(msg("/天气|雨"))
            secret = await host.handle(msg("/秘密"))
            secret_owner = await host.handle(msg("/秘密", user=OWNER))
            broken = await host.handle(msg("/坏"))
            listing = await host.handle(msg("/分类"))
            errors = host.plugin_statuses[dist].errors
    assert weather.text == "g1 天气：雨" and weather.command == "天气"
    assert "只有机器人的主人" in secret.text and secret_owner.text == "owner only"
    assert f"plugin:{dist}" in broken.degraded and "执行失败" in broken.text
    assert "可用分类" in listing.text
    assert any("/分类 clashes" in e for e in errors), errors


async def test_friend_circle_posts_are_never_commands(data_dir):
    async with host_for(data_dir, []) as host:
        reply = await host.handle(msg("/分类 13812345678", channel="friend_circle"))
    assert reply.command is None and reply.recorded == ["friend_circle"]
