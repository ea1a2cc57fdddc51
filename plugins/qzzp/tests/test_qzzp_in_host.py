"""qzzp in a real host, loaded through its entry point (wxhelper.testing), as a plugin author tests."""

from __future__ import annotations

from wxhelper.testing import FakeLLM, assert_in_prompt, host_for, render_system_prompt

DIST = "wxhelper-qzzp"


async def test_answers_from_its_corpus_and_shares_job_ads_with_a_phone_number(tmp_path):
    async with host_for(tmp_path, plugins=[DIST]) as host:
        offline = await host.handle({"user_id": "worker", "group_id": "g1", "content": "劳动合同试用期最长多久？"})
        ad = await host.handle({"user_id": "boss", "group_id": "g2",
                                "content": "急招前台文员，月薪5000，双休，电话13812345678"})
    assert offline.namespace == "qzzp" and offline.offline and offline.text and offline.retrieved
    assert ad.namespace == "qzzp" and "namespace" in ad.recorded

    with FakeLLM(reply="好的") as llm:
        async with host_for(tmp_path, plugins=[DIST], llm=llm) as host:
            reply = await host.handle({"user_id": "seeker", "group_id": "g3", "content": "求职：想找前台的工作"})
    assert reply.namespace == "qzzp" and reply.text == "好的"
    assert llm.chat_requests()[0]["messages"][0]["role"] == "system"
    assert_in_prompt(reply, "求职招聘", "13812345678", "seeker：求职：想找前台的工作")


def test_system_prompt_renders_with_sample_data():
    text = render_system_prompt("qzzp", plugins=[DIST], group=False, empty=True)
    assert "求职招聘" in text and "13912345678" not in text
