"""Question lines in corpora ("<!-- 问法: … -->" under a markdown heading, "questions" in JSON lines):
parsed and attached to every passage of their section, part of the passage id, embedded with the
passage and read by the lexical re-rank, stored in Chroma as a scalar, never in the passage text the
LLM sees; malformed lines are errors naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wxhelper import InboundMessage, Settings
from wxhelper.knowledge import KnowledgeBase, load_corpus
from wxhelper.knowledge.corpus import MAX_QUESTION_CHARS, MAX_QUESTIONS, CorpusError, passage_id
from wxhelper.knowledge.index import HEADING_WEIGHT, QUESTION_WEIGHT, collection_name
from wxhelper.namespace import Namespace
from wxhelper.testing import host_for, prompt_text, temporary_plugin

ROOT = Path(__file__).resolve().parent.parent
CORE_CORPUS = ROOT / "core" / "wxhelper" / "corpus"
TEMPLATE_CORPUS = (ROOT / "core" / "wxhelper" / "plugin_template" / "{{cookiecutter.project_slug}}"
                   / "{{cookiecutter.package}}" / "corpus")

DOC = """# 二手车过户
<!-- 问法: 过户是啥意思 | What is a title transfer? -->

过户是把车辆登记在新车主名下。

## 需要的材料

<!-- 问法：过户要带啥｜去车管所要拿什么 | What do I bring? -->
登记证书、行驶证。

双方身份证原件。

## 费用
<!-- questions: 过户多少钱 | How much does it cost? -->
交易服务费和号牌工本费。

## 办理地点
车管所或二手车交易市场。
"""


def make_ns(tmp_path: Path, files: dict[str, str], name: str = "qns") -> Namespace:
    corpus = tmp_path / f"corpus-{name}"
    corpus.mkdir(exist_ok=True)
    for file, text in files.items():
        (corpus / file).write_text(text, encoding="utf-8")
    return Namespace(name=name, title="问法测试", corpus_dir=corpus, plugin="test-plugin")


# --- parsing ---------------------------------------------------------------------------------------
def test_a_question_line_belongs_to_every_passage_of_its_section_and_never_to_its_text(tmp_path):
    from wxhelper.knowledge import corpus as corpus_module

    ns = make_ns(tmp_path, {"transfer.md": DOC})
    # a passage limit small enough that the materials section splits into two passages
    passages = corpus_module.load_corpus(ns, max_chars=12)
    by_heading: dict[str, list] = {}
    for p in passages:
        by_heading.setdefault(p.heading, []).append(p)
    materials = by_heading["二手车过户 › 需要的材料"]
    assert len(materials) == 2  # both halves of the section carry its questions
    assert all(p.questions == ("过户要带啥", "去车管所要拿什么", "What do I bring?") for p in materials)
    assert {p.questions for p in by_heading["二手车过户"]} == {("过户是啥意思", "What is a title transfer?")}
    assert {p.questions for p in by_heading["二手车过户 › 费用"]} == {("过户多少钱", "How much does it cost?")}
    assert {p.questions for p in by_heading["二手车过户 › 办理地点"]} == {()}  # a section without a line
    for p in passages:
        assert "问法" not in p.text and "<!--" not in p.text and "questions" not in p.text
        assert not any(q in p.text for q in p.questions)


def test_jsonl_questions_are_a_list_field_not_metadata(tmp_path):
    lines = [{"title": "退款", "text": "七天无理由退款。", "questions": ["买了能退吗", "Can I get a refund?"],
              "lang": "zh"},
             {"title": "发票", "text": "可以开电子发票。"}]
    ns = make_ns(tmp_path, {"faq.jsonl": "\n".join(json.dumps(x, ensure_ascii=False) for x in lines)})
    refund, invoice = load_corpus(ns)
    assert refund.questions == ("买了能退吗", "Can I get a refund?") and refund.metadata == {"lang": "zh"}
    assert invoice.questions == () and refund.text == "七天无理由退款。"


MALFORMED_MD = {
    "after text": ("# 标题\n正文\n<!-- 问法: 甲 | 乙 -->\n", 3, "follows text"),
    "before any heading": ("<!-- 问法: 甲 -->\n# 标题\n正文\n", 1, "before any heading"),
    "twice": ("# 标题\n<!-- 问法: 甲 -->\n<!-- 问法: 乙 -->\n正文\n", 3, "second one for the heading on line 1"),
    "not closed": ("# 标题\n<!-- 问法: 甲 | 乙\n正文\n", 2, "closed by -->"),
    "no colon": ("# 标题\n<!-- 问法 甲 | 乙 -->\n正文\n", 2, "问法: or questions:"),
    "empty item": ("# 标题\n<!-- 问法: 甲 |  | 乙 -->\n正文\n", 2, "an empty question"),
    "too many": ("# 标题\n<!-- 问法: " + " | ".join(f"问{i}" for i in range(MAX_QUESTIONS + 1)) + " -->\n正文\n", 2,
                 f"at most {MAX_QUESTIONS}"),
    "too long": ("# 标题\n<!-- questions: " + "长" * (MAX_QUESTION_CHARS + 1) + " -->\n正文\n", 2,
                 f"at most {MAX_QUESTION_CHARS}"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_MD))
def test_a_malformed_question_line_is_an_error_naming_the_file_and_line(tmp_path, case):
    text, line, reason = MALFORMED_MD[case]
    ns = make_ns(tmp_path, {"bad.md": text})
    with pytest.raises(CorpusError) as err:
        load_corpus(ns)
    assert f"bad.md:{line}:" in str(err.value) and reason in str(err.value)


@pytest.mark.parametrize("questions, reason", [("买了能退吗", "must be a list of strings"),
                                               ([1, 2], "must be a list of strings"),
                                               (["买了能退吗", " "], "an empty question")])
def test_a_malformed_jsonl_questions_field_is_an_error_naming_the_file_and_line(tmp_path, questions, reason):
    good = json.dumps({"text": "好的一行"}, ensure_ascii=False)
    bad = json.dumps({"text": "退款", "questions": questions}, ensure_ascii=False)
    ns = make_ns(tmp_path, {"faq.jsonl": f"{good}\n{bad}\n"})
    with pytest.raises(CorpusError) as err:
        load_corpus(ns)
    assert "faq.jsonl:2:" in str(err.value) and "'questions'" in str(err.value) and reason in str(err.value)


def test_a_comment_that_is_not_a_question_line_is_left_alone(tmp_path):
    ns = make_ns(tmp_path, {"a.md": "# 标题\n<!-- questionable: an author's note -->\n正文\n"})
    (p,) = load_corpus(ns)
    assert p.questions == () and "questionable" in p.text


def test_wxhelper_index_reports_a_malformed_line_without_a_traceback(tmp_path):
    from click.testing import CliRunner

    from wxhelper.cli import main

    bad = """
from pathlib import Path
from wxhelper import hookimpl, Namespace
HERE = Path(__file__).parent
@hookimpl
def register_namespaces(register):
    register(Namespace(name="badq", title="badq", keywords=("BADQ",), corpus_dir=HERE / "corpus"))
"""
    with temporary_plugin(tmp_path / "p", "wxhelper-badq", bad,
                          files={"corpus/faq.md": "# 常见问题\n正文\n<!-- 问法: 甲 -->\n"}) as dist:
        env = {"WXHELPER_DATA_DIR": str(tmp_path / "data"), "WXHELPER_LOAD_PLUGINS": dist,
               "WXHELPER_EMBEDDING": "hashed", "XDG_CACHE_HOME": str(tmp_path)}
        result = CliRunner().invoke(main, ["index", "badq"], env=env)
        assert result.exit_code != 0
        assert "faq.md:3:" in result.output and "follows text" in result.output
        assert "Traceback" not in result.output
        listing = CliRunner().invoke(main, ["namespaces"], env=env)
        assert listing.exit_code == 0 and "faq.md:3:" in listing.output  # the listing says why, not crashes


# --- ids and indexing ----------------------------------------------------------------------------------
def test_questions_are_part_of_the_id_and_changing_them_reindexes_only_that_section(tmp_path):
    ns = make_ns(tmp_path, {"transfer.md": DOC})
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed", vector_cache="off"))
    first = kb.index(ns)
    assert first.added == first.total == 4
    before = {p.heading: p.id for p in load_corpus(ns)}
    # a passage without questions keeps the id it had before question lines existed
    assert before["二手车过户 › 办理地点"] == passage_id("qns", "transfer.md", "二手车过户 › 办理地点",
                                                      "车管所或二手车交易市场。")
    (Path(ns.corpus_dir) / "transfer.md").write_text(DOC.replace("过户多少钱", "过户得花多少钱"), encoding="utf-8")
    after = {p.heading: p.id for p in load_corpus(ns)}
    changed = {h for h in before if before[h] != after[h]}
    assert changed == {"二手车过户 › 费用"}
    summary = kb.index(ns)
    assert (summary.added, summary.removed, summary.rebuilt) == (1, 1, False)
    stored = kb.client().get_collection(collection_name("qns")).get(ids=[after["二手车过户 › 费用"]],
                                                                    include=["metadatas", "documents"])
    # Chroma metadata are scalars: the questions are one string, a question a line; the document is the text
    assert stored["metadatas"][0]["questions"] == "过户得花多少钱\nHow much does it cost?"
    assert stored["documents"][0] == "交易服务费和号牌工本费。"


def test_a_passage_vector_blends_in_the_mean_of_its_questions(tmp_path):
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding="hashed", vector_cache="off"))
    p = next(p for p in load_corpus(make_ns(tmp_path, {"transfer.md": DOC})) if p.heading.endswith("需要的材料"))
    (v,) = kb.passage_vectors([p])
    full, head, *questions = (np.asarray(x) for x in kb.embedding([p.embed_text, p.heading, *p.questions]))
    base = full + HEADING_WEIGHT * head
    base /= np.linalg.norm(base)
    mean = np.mean(questions, axis=0)
    expected = base + QUESTION_WEIGHT * mean / np.linalg.norm(mean)
    assert np.allclose(v, expected / np.linalg.norm(expected), atol=1e-6)
    assert "questions" in kb.index_label  # collections built before question lines are rebuilt


# --- retrieval -------------------------------------------------------------------------------------------
SECTIONS = {
    "car.md": "# 用车常识\n\n## 泡水车鉴别\n{q}\n检查座椅滑轨和安全带根部有没有锈迹、泥沙。\n\n"
              "## 暴雨天行车\n\n暴雨天开车要慢，路面积水深时不要涉水，车在水里熄火后不要再次启动，先叫救援。\n\n"
              "## 车漆保养\n\n车漆要定期打蜡，洗车后擦干。\n\n## 轮胎更换\n\n轮胎花纹磨到标记线就该更换。\n"
}


@pytest.mark.parametrize("embedding", ["hashed", "use"])
def test_a_question_only_match_is_retrieved(tmp_path, embedding):
    """The question shares no two-character word with any section's text, and without question lines a
    sibling section (暴雨天行车) is the nearest; the answer's question line makes the difference."""
    query = "被大水淹过的车咋认出来"
    plain = make_ns(tmp_path, {"car.md": SECTIONS["car.md"].format(q="")}, name="plain")
    asked = make_ns(tmp_path, {"car.md": SECTIONS["car.md"].format(q="<!-- 问法: 车被大水淹过咋认出来 | 怎么认出泡过水的车 -->")},
                    name="asked")
    kb = KnowledgeBase(Settings(data_dir=tmp_path, embedding=embedding, vector_cache="off"))
    found = kb.search_sync(asked, query, 1, 10000)
    assert found and found[0].heading == "用车常识 › 泡水车鉴别"
    assert found[0].text == "检查座椅滑轨和安全带根部有没有锈迹、泥沙。"  # the passage, not its questions
    without = kb.search_sync(plain, query, 1, 10000)
    # without the line the sibling wins: the line made the difference
    assert without and without[0].heading == "用车常识 › 暴雨天行车"


async def test_question_lines_never_reach_the_prompt(data_dir, tmp_path):
    source = """
from pathlib import Path
from wxhelper import hookimpl, Namespace
HERE = Path(__file__).parent
@hookimpl
def register_namespaces(register):
    register(Namespace(name="qplug", title="测试插件", keywords=("QPLUG",), corpus_dir=HERE / "corpus"))
"""
    corpus = "# 用车常识\n\n## 泡水车鉴别\n<!-- 问法: 车被大水淹过咋认出来 | 泡过水的车 QMARKER 怎么认 -->\n" \
             "检查座椅滑轨和安全带根部有没有锈迹、泥沙。\n\n## 车漆保养\n\n车漆要定期打蜡，洗车后擦干。\n"
    with temporary_plugin(tmp_path / "p", "wxhelper-qplug", source, files={"corpus/car.md": corpus}) as dist:
        async with host_for(data_dir, [dist]) as host:
            reply = await host.handle(InboundMessage(user_id="u1", content="QPLUG 车被大水淹过咋认出来",
                                                     namespace="qplug"))
            assert [p.heading for p in reply.retrieved][:1] == ["用车常识 › 泡水车鉴别"]
            text = prompt_text(reply)
            assert "检查座椅滑轨" in text  # the passage is in the prompt …
            for absent in ("QMARKER", "泡过水的车", "问法", "<!--"):  # … its question line is not
                assert absent not in text
            assert all("QMARKER" not in p.text for p in reply.retrieved)


# --- the shipped corpora ----------------------------------------------------------------------------------
@pytest.mark.parametrize("corpus_dir", [CORE_CORPUS, TEMPLATE_CORPUS], ids=["default-namespace", "plugin-template"])
def test_every_section_of_the_shipped_example_corpora_has_a_question_line(corpus_dir):
    ns = Namespace(name="x", title="x", corpus_dir=corpus_dir)
    passages = load_corpus(ns)
    assert passages
    missing = sorted({f"{p.source} › {p.heading}" for p in passages if not p.questions})
    assert not missing, missing


@pytest.mark.parametrize("name", ["car_client", "qzzp", "lvyou"])
def test_every_section_of_the_shipped_plugins_corpora_has_a_question_line(name):
    """The plugins' corpora as installed (entry points): each section says how users ask about it."""
    from wxhelper.testing import load_namespace

    passages = load_corpus(load_namespace(name, ["wxhelper-car-client", "wxhelper-qzzp", "wxhelper-lvyou"]))
    assert len(passages) >= 100
    missing = sorted({f"{p.source} › {p.heading}" for p in passages if not p.questions})
    assert not missing, missing
    assert all(3 <= len(p.questions) <= 12 for p in passages)


def test_assert_corpus_questions_names_each_section_that_breaks_the_promise(tmp_path):
    from wxhelper.testing import assert_corpus_questions

    good = "# 过户\n\n## 材料\n<!-- 问法: 过户要带啥 | 过户带几样东西 | 卖车要准备啥 | What do I bring? -->\n身份证和登记证书。\n"
    assert_corpus_questions(make_ns(tmp_path, {"a.md": good}, "good"), per_passage=4, min_passages=1)
    bad = (good + "\n## 费用\n<!-- 问法: 过户多少钱 | 过户贵不贵 | 要交啥费 | How much? -->\n几百元。\n"
           "\n## 地点\n车管所。\n\n## 时间\n<!-- 问法: 过户要多久 | 几天办完 | 当天能办好吗 | 一小时够吗 -->\n当天。\n")
    with pytest.raises(AssertionError) as raised:
        assert_corpus_questions(make_ns(tmp_path, {"a.md": bad}, "bad"), per_passage=4)
    message = str(raised.value)
    assert "a.md › 过户 › 地点: 0 questions" in message
    assert "a.md › 过户 › 时间: no English question" in message
    assert "费用" not in message and "材料" not in message
    with pytest.raises(AssertionError, match="2 passages, expected >= 100"):
        assert_corpus_questions(make_ns(tmp_path, {"a.md": good + "\n## 费用\n<!-- 问法: a1 | b1 | c1 | d -->\n几百元。\n"}, "few"),
                                min_passages=100)
