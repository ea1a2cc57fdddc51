"""wxhelper plugin: the 求职招聘 (job recruiting) namespace.

Supplies one namespace, ``qzzp``: a system prompt that makes the bot a recruiting
assistant for job seekers and employers, a corpus of mainland China labour-law
and job-hunting notes for retrieval, and the standard phone-number record filter
so that only job posts and job-seeker posts with a contact number enter the
shared board.
"""

from __future__ import annotations

from pathlib import Path

from wxhelper.hookspecs import hookimpl
from wxhelper.namespace import Namespace
from wxhelper.phone import has_phone_number

HERE = Path(__file__).parent

NAME = "qzzp"
TITLE = "求职招聘"
DESCRIPTION = (
    "求职招聘：撮合招聘信息与求职者（岗位、城市、薪资、联系电话），"
    "解答劳动合同、试用期、社保公积金、加班费、经济补偿、劳动仲裁等劳动法常识，"
    "并提醒收费入职、押金、刷单、培训贷等求职骗局。"
)

KEYWORDS: tuple[str, ...] = (
    # 招聘 / 求职
    "招聘",
    "求职",
    "找工作",
    "招工",
    "招人",
    "急招",
    "应聘",
    "内推",
    "简历",
    "面试",
    "司机招聘",
    "普工",
    "长白班",
    "包吃住",
    "兼职",
    "全职",
    "实习生",
    "岗位",
    "入职",
    "上岗",
    # 薪酬福利
    "工资",
    "薪资",
    "月薪",
    "底薪",
    "时薪",
    "日结",
    "年终奖",
    "加班费",
    "社保",
    "五险一金",
    "公积金",
    # 劳动关系
    "劳动合同",
    "试用期",
    "劳务派遣",
    "辞职",
    "离职",
    "辞退",
    "经济补偿",
    "劳动仲裁",
)


@hookimpl
def register_namespaces(register):
    register(
        Namespace(
            name=NAME,
            title=TITLE,
            description=DESCRIPTION,
            keywords=KEYWORDS,
            templates_dir=HERE / "templates",
            corpus_dir=HERE / "corpus",
            record_filter=has_phone_number,
        )
    )
