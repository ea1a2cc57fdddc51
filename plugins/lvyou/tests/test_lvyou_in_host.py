"""lvyou in a real host, loaded through its entry point (wxhelper.testing), as a plugin author tests."""

from __future__ import annotations

from wxhelper.testing import FakeLLM, assert_in_prompt, host_for, render_system_prompt

DIST = "wxhelper-lvyou"


async def test_answers_from_its_corpus_and_shares_carpool_posts_with_a_phone_number(tmp_path):
    async with host_for(tmp_path, plugins=[DIST]) as host:
        offline = await host.handle({"user_id": "u1", "group_id": "g1", "content": "去日本旅游要办签证吗？需要什么材料"})
        post = await host.handle({"user_id": "u2", "group_id": "g2",
                                  "content": "五一自驾去黄山旅游，拼车还差2人，电话13712345678"})
    assert offline.namespace == "lvyou" and offline.offline and offline.text
    assert any(p.source == "japan-visa.md" for p in offline.retrieved), [p.source for p in offline.retrieved]
    assert post.namespace == "lvyou" and "namespace" in post.recorded

    with FakeLLM(reply="可以联系拼车的群友") as llm:
        async with host_for(tmp_path, plugins=[DIST], llm=llm) as host:
            reply = await host.handle({"user_id": "u3", "content": "五一去黄山旅游，有拼车的吗"})
    assert reply.text == "可以联系拼车的群友"
    assert llm.chat_requests()[0]["messages"][0]["role"] == "system"
    assert_in_prompt(reply, "旅游", "13712345678")


def test_system_prompt_renders_with_sample_data():
    text = render_system_prompt("lvyou", plugins=[DIST])
    assert "旅游" in text and "18651234567" in text
