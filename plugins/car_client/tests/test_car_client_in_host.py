"""car_client in a real host, loaded through its entry point (wxhelper.testing), as a plugin author tests."""

from __future__ import annotations

from wxhelper.testing import FakeLLM, assert_in_prompt, host_for, render_system_prompt

DIST = "wxhelper-car-client"


async def test_answers_from_its_corpus_and_shares_ads_with_a_phone_number(tmp_path):
    async with host_for(tmp_path, plugins=[DIST]) as host:
        offline = await host.handle({"user_id": "buyer", "group_id": "g1", "content": "二手车过户需要带什么材料？"})
        ad = await host.handle({"user_id": "seller", "group_id": "g2",
                                "content": "出售2019年丰田卡罗拉，一手车无事故，9.3万，电话13912345678"})
    assert offline.namespace == "car_client" and offline.offline and offline.text
    assert any(p.source == "transfer-process.md" for p in offline.retrieved), [p.source for p in offline.retrieved]
    assert ad.namespace == "car_client" and "namespace" in ad.recorded

    with FakeLLM(reply="有一台卡罗拉，电话13912345678") as llm:
        async with host_for(tmp_path, plugins=[DIST], llm=llm) as host:
            reply = await host.handle({"user_id": "buyer2", "content": "想买台二手车，丰田的，有车源吗"})
    assert reply.text == "有一台卡罗拉，电话13912345678" and not reply.offline
    assert llm.chat_requests()[0]["messages"][0]["role"] == "system"
    assert_in_prompt(reply, "二手车顾问", "## 群内车源信息", "13912345678", "这是私聊")


def test_system_prompt_renders_with_sample_data():
    text = render_system_prompt("car_client", plugins=[DIST])
    assert "## 群内车源信息" in text and "13912345678" in text and "{{ 7*7 }}" in text
