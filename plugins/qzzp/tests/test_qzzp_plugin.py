"""Tests for the wxhelper-qzzp plugin, run against the distribution installed through its entry point."""

from __future__ import annotations

import re
import time
from datetime import datetime
from importlib.metadata import distribution, entry_points
from pathlib import Path

import pytest
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pluggy import PluginManager

from wxhelper import hookspecs
from wxhelper.messages import InboundMessage, Passage, Record
from wxhelper.namespace import Namespace

GROUP = "wxhelper"
NAME = "qzzp"


# --------------------------------------------------------------------------- helpers


def _entry_point():
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == NAME]
    assert len(matches) == 1, f"expected one {NAME!r} entry point in group {GROUP!r}, found {matches}"
    return matches[0]


def _registered() -> list[Namespace]:
    module = _entry_point().load()
    collected: list[Namespace] = []
    module.register_namespaces(register=collected.append)
    return collected


@pytest.fixture(scope="module")
def ns() -> Namespace:
    (namespace,) = _registered()
    return namespace


# The plain environment from the plugin brief, and the whitespace options the host renders with.
ENV_OPTIONS = [{}, {"trim_blocks": True, "lstrip_blocks": True, "autoescape": False}]


@pytest.fixture(params=ENV_OPTIONS, ids=["plain", "host-whitespace"])
def env_options(request) -> dict:
    return request.param


def _env(ns: Namespace, **options) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(ns.templates_dir)), undefined=StrictUndefined, **options
    )
    env.filters["datetime"] = lambda ts: datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M")
    return env


def _record(user_id: str, content: str, ago: float, source_id: str = "group-1") -> Record:
    return Record(
        user_id=user_id,
        source_id=source_id,
        bot_id="bot-1",
        content=content,
        timestamp=time.time() - ago,
        message_id=f"m-{user_id}-{int(ago)}",
    )


def _render(ns: Namespace, options: dict, **overrides) -> str:
    context = {
        "namespace": ns,
        "bot_id": "bot-1",
        "now": "2025-03-01 09:30",
        "message": InboundMessage(user_id="u-asker", group_id="group-1", content="苏州有没有普工岗位？"),
        "knowledge": [],
        "board": [],
        "friend_circle": [],
        "extra": {},
    }
    context.update(overrides)
    return _env(ns, **options).get_template("system.j2").render(**context)


# --------------------------------------------------------------------------- entry point and registration


def test_entry_point_is_installed():
    ep = _entry_point()
    assert ep.value == "wxhelper_qzzp"
    dist = distribution("wxhelper-qzzp")
    assert dist.version == "0.1.0"
    assert any(e.name == NAME for e in dist.entry_points if e.group == GROUP)


def test_register_yields_exactly_one_namespace():
    namespaces = _registered()
    assert len(namespaces) == 1
    (namespace,) = namespaces
    assert isinstance(namespace, Namespace)
    assert namespace.name == "qzzp"
    assert namespace.title == "求职招聘"
    assert namespace.description.strip()
    assert (Path(namespace.templates_dir) / "system.j2").is_file()
    assert Path(namespace.corpus_dir).is_dir()


def test_hook_is_valid_for_pluggy():
    """The module passes pluggy's spec check and the hook delivers the namespace."""
    pm = PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(_entry_point().load(), name=NAME)
    pm.check_pending()
    collected: list[Namespace] = []
    pm.hook.register_namespaces(register=collected.append, settings=None)
    assert [n.name for n in collected] == ["qzzp"]


def test_resources_live_inside_the_package(ns):
    package_dir = Path(_entry_point().load().__file__).parent
    assert Path(ns.templates_dir).resolve() == (package_dir / "templates").resolve()
    assert Path(ns.corpus_dir).resolve() == (package_dir / "corpus").resolve()


# --------------------------------------------------------------------------- template


def test_template_renders_with_sample_data(ns, env_options):
    board = [
        _record("u-boss1", "【招聘】苏州工业园区电子厂招普工10名，长白班，综合月薪6000-7500，包吃住，电话13812345678", 7200),
        _record("u-seeker", "【求职】B2驾照8年，找苏州货车司机工作，期望8000以上，联系15900001111", 3600),
        _record("u-boss2", "昆山饭店招服务员2名，月薪4500，联系人王姐 0512-57001234", 600),
    ]
    friend_circle = [_record("u-friend", "我们公司在招质检员，五险一金，电话13698765432", 1800, source_id="u-friend")]
    knowledge = [
        Passage(
            text="试用期工资不得低于本单位相同岗位最低档工资或者劳动合同约定工资的百分之八十。",
            source="probation-period.md",
            heading="试用期工资",
            score=0.91,
        ),
        Passage(text="劳动仲裁不收费。", source="labor-arbitration.md", heading="", score=0.5),
    ]
    text = _render(
        ns,
        env_options,
        board=board,
        friend_circle=friend_circle,
        knowledge=knowledge,
        extra={"city_hint": "苏州"},
    )
    for phone in ("13812345678", "15900001111", "0512-57001234", "13698765432"):
        assert phone in text
    assert "求职招聘助手" in text
    assert "试用期工资不得低于" in text and "probation-period.md" in text
    assert "劳动仲裁不收费" in text
    assert "city_hint" in text and "苏州" in text
    assert "2025-03-01 09:30" in text
    assert "群聊" in text
    # each board post is one line of its own, in chronological order
    lines = text.splitlines()
    for phone in ("13812345678", "15900001111", "0512-57001234"):
        assert any(line.startswith("- [") and phone in line for line in lines), phone
    if env_options.get("trim_blocks"):
        assert "\n\n\n" not in text, "the host's whitespace options must not leave runs of blank lines"
    assert text.index("13812345678") < text.index("15900001111") < text.index("0512-57001234")
    # the scam warnings and the no-invention rule are always present
    for word in ("押金", "刷单", "培训贷", "编造"):
        assert word in text


def test_template_renders_with_everything_empty(ns, env_options):
    text = _render(
        ns,
        env_options,
        bot_id="",
        message=InboundMessage(user_id="u-private", content="试用期多久？"),
    )
    assert "求职招聘助手" in text
    assert "私聊" in text
    assert "参考资料（" not in text
    assert "朋友圈动态" not in text
    assert "附加信息" not in text
    assert "没有可用的招聘或求职帖子" in text
    assert not re.search(r"1[3-9]\d{9}", text), "no phone number may appear when the board is empty"


def test_template_treats_user_text_as_data(ns, env_options):
    post = "招聘 {{ 7*7 }} {{ 'PWN' ~ 'ED' }} {% raw %}x{% endraw %} 电话13812345678"
    text = _render(ns, env_options, board=[_record("u-evil", post, 60)])
    assert "{{ 7*7 }} {{ 'PWN' ~ 'ED' }}" in text
    assert "招聘 49" not in text
    assert "PWNED" not in text


def test_template_renders_through_the_host_renderer(ns):
    """The host's own renderer (ChoiceLoader, sandbox, its datetime filter) renders it without falling back."""
    import wxhelper.prompt as prompt
    context = {
        "namespace": ns,
        "bot_id": "bot-1",
        "now": "2025-03-01 09:30",
        "message": InboundMessage(user_id="u-asker", group_id="group-1", content="找司机工作"),
        "knowledge": [],
        "board": [_record("u-boss", "招货车司机，B2，月薪9000，电话13812345678", 120)],
        "friend_circle": [],
        "extra": {},
    }
    text, error = prompt.PromptRenderer().render_system(ns, context)
    assert error is None
    assert "求职招聘助手" in text and "13812345678" in text


# --------------------------------------------------------------------------- corpus


def test_corpus_has_enough_titled_documents(ns):
    docs = sorted(Path(ns.corpus_dir).glob("*.md"))
    assert len(docs) >= 30
    for doc in docs:
        assert re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*\.md", doc.name), doc.name
        text = doc.read_text(encoding="utf-8")
        assert text.strip(), doc.name
        assert text.startswith("# "), doc.name
        assert 300 <= len(text) <= 1200, (doc.name, len(text))
        sections = [line for line in text.splitlines() if line.startswith("## ")]
        assert 2 <= len(sections) <= 5, (doc.name, len(sections))


def test_corpus_covers_core_topics(ns):
    corpus = "\n".join(p.read_text(encoding="utf-8") for p in Path(ns.corpus_dir).glob("*.md"))
    for topic in (
        "劳动合同",
        "试用期",
        "五险一金",
        "公积金",
        "最低工资",
        "加班",
        "年休假",
        "医疗期",
        "产假",
        "经济补偿",
        "劳动仲裁",
        "劳务派遣",
        "非全日制",
        "竞业限制",
        "培训贷",
        "工伤",
        "离职证明",
        "就业歧视",
        "灵活就业",
    ):
        assert topic in corpus, topic


# --------------------------------------------------------------------------- routing keywords

RECRUITING_MESSAGES = [
    "急招普工20名，长白班，包吃住，月薪6000-7500",
    "昆山电子厂招工，18-45岁，日结150一天",
    "求职：会开叉车，有证，想找个稳定的活",
    "有没有人在苏州找工作的？我这边招人",
    "司机招聘，B2驾照，跑长途，待遇面议",
    "明天去面试，该准备点什么？",
    "简历怎么写才能让HR多看两眼",
    "试用期可以不交社保吗？",
    "公司一直拖欠工资三个月了怎么办",
    "五险一金是按基本工资交还是按全部工资交",
    "上个月周末加班了四天，加班费怎么算",
    "老板不跟我签劳动合同，可以要二倍工资吗",
    "我想辞职，要提前多久说？",
    "被公司辞退了，能拿多少经济补偿",
    "离职证明公司不给开怎么办",
    "大学生暑假找兼职，最好是周末的",
    "这个岗位底薪多少，有提成吗",
    "入职要交押金正常吗",
    "全职宝妈想找份晚上的活",
    "劳务派遣和正式工有什么区别",
    "时薪25元的小时工，包工作餐",
    "申请劳动仲裁需要什么材料",
    "年终奖离职了还能拿吗",
    "公积金断交了有影响吗",
    "求内推，做了五年仓库管理",
    "招聘实习生两名，会剪辑视频",
    "薪资范围8k-12k，双休",
]

OTHER_MESSAGES = [
    # used cars
    "二手车过户需要带哪些材料？",
    "这台卡罗拉2018款跑了6万公里，能卖多少钱",
    "首付三成，月供多少？",
    "驾照还在实习期能上高速吗",
    "车况怎么样，有没有泡水火烧",
    "收一台七座SUV，预算十万以内",
    "年检快到期了在哪里检测方便",
    # travel
    "五一去三亚玩几天合适？",
    "云南自由行有什么推荐路线",
    "机票改签要收手续费吗",
    "酒店可以提前入住吗",
    "跟团游还是自由行划算",
    "去西藏要提前办边防证吗",
    # small talk
    "你好",
    "早上好，今天天气不错",
    "哈哈哈笑死我了",
    "谢谢大家，辛苦了",
    "晚上吃什么好呢",
    "生日快乐！",
    "周末一起去爬山吗",
]


def _routes(ns: Namespace, text: str) -> list[str]:
    """Keywords found in ``text``: case-insensitive substring match, as the host's router does."""
    lowered = text.lower()
    return [k for k in ns.keywords if k.lower() in lowered]


def test_keywords_shape(ns):
    assert isinstance(ns.keywords, tuple)
    assert 20 <= len(ns.keywords) <= 40
    assert len(set(ns.keywords)) == len(ns.keywords)
    for required in ("招聘", "求职", "找工作", "简历", "面试", "工资", "社保", "五险一金", "劳动合同", "试用期", "兼职"):
        assert required in ns.keywords
    for generic in ("车", "旅游", "你好", "工作", "实习", "钱"):
        assert generic not in ns.keywords


@pytest.mark.parametrize("text", RECRUITING_MESSAGES)
def test_recruiting_messages_route_here(ns, text):
    assert _routes(ns, text), f"no keyword matches {text!r}"


@pytest.mark.parametrize("text", OTHER_MESSAGES)
def test_other_messages_do_not_route_here(ns, text):
    assert not _routes(ns, text), f"{text!r} matched {_routes(ns, text)}"


# --------------------------------------------------------------------------- record filter


@pytest.mark.parametrize(
    "text",
    [
        "【招聘】电子厂普工，包吃住，月薪6500，电话13812345678",
        "招厨师一名，联系 139 0000 1111",
        "求职：仓管，5年经验，手机+86 159-0000-1111",
        "饭店招服务员，联系电话0512-57001234",
    ],
)
def test_record_filter_accepts_posts_with_phone(ns, text):
    assert ns.record_filter(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "【招聘】电子厂普工，包吃住，月薪6500，有意私聊",
        "求职：仓管，5年经验，期望6000",
        "工号20240512345678，工资什么时候发",
        "试用期多久？",
    ],
)
def test_record_filter_rejects_posts_without_phone(ns, text):
    assert ns.record_filter(text) is False


def test_every_passage_carries_how_users_ask_it(ns):
    """The 问法 lines are read by the host, kept out of the passage text, and cover every section."""
    from wxhelper.testing import assert_corpus_questions

    assert_corpus_questions(ns, per_passage=4, english=True, min_passages=100)
