"""wxhelper plugin: the 旅游 (travel) namespace.

Registers one namespace, ``lvyou``: a travel-advisor system prompt
(``templates/system.j2``), a Chinese travel knowledge corpus (``corpus/*.md``)
and the host's phone-number record filter, so only classified-ad style posts
(拼车/拼团/包车/民宿/导游 offers with a phone number) enter the shared board.
"""

from __future__ import annotations

from pathlib import Path

from wxhelper.hookspecs import hookimpl
from wxhelper.namespace import Namespace
from wxhelper.phone import has_phone_number

HERE = Path(__file__).parent

NAME = "lvyou"
TITLE = "旅游"
DESCRIPTION = (
    "旅游顾问：签证与证件（护照、港澳台通行证、签注）、机票火车票、酒店民宿、"
    "行程规划与预算、热门目的地攻略、高原反应与出行安全；"
    "汇总群内拼车、拼团、包车、民宿、导游信息（须留电话）。"
)

# Routing keywords. Each must be specific to travel: a word that also turns up in
# used-car ads (e.g. bare 包车, which is inside "包车况"), job ads or small talk
# would steal messages from other namespaces.
KEYWORDS: tuple[str, ...] = (
    "旅游",
    "旅行",
    "旅行社",
    "出游",
    "度假",
    "签证",
    "护照",
    "签注",
    "港澳通行证",
    "台湾通行证",
    "落地签",
    "免签",
    "出境",
    "边防证",
    "机票",
    "航班",
    "高铁票",
    "火车票",
    "酒店",
    "民宿",
    "客栈",
    "景点",
    "景区",
    "门票",
    "行程",
    "攻略",
    "自由行",
    "跟团",
    "导游",
    "自驾游",
    "拼团",
    "包车游",
    "一日游",
    "高原反应",
    "邮轮",
    "换汇",
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
