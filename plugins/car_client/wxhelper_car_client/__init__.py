"""wxhelper plugin: the ``car_client`` namespace (二手车, used cars).

Registers one namespace whose system prompt (``templates/system.j2``) turns the
bot into a used-car adviser and whose corpus (``corpus/*.md``) covers transfer
procedures, inspection, valuation, loans, insurance, tax and common scams.
Only messages carrying a phone number enter the shared board (classified ads).
"""

from __future__ import annotations

from pathlib import Path

from wxhelper.hookspecs import hookimpl
from wxhelper.namespace import Namespace
from wxhelper.phone import has_phone_number

__version__ = "0.1.0"

HERE = Path(__file__).parent

NAME = "car_client"
TITLE = "二手车"
DESCRIPTION = (
    "二手车买卖顾问：过户与迁入、验车与车况识别（事故车/泡水车/调表）、估价、"
    "车贷与抵押、保险、年检违章、交易防骗；群内带电话的买车/卖车信息会进入共享车源板。"
)

# Routing keywords. Deliberately specific to used-car talk: no bare 买车/卖车
# (they are substrings of 买车票/卖车票), no bare 里程/公里 (飞行里程, 景点距离),
# no bare 大众 (大众点评), no 车票/火车/工资.
KEYWORDS: tuple[str, ...] = (
    "二手车",
    "过户",
    "车况",
    "估价",
    "提车",
    "验车",
    "车贷",
    "车险",
    "准新车",
    "事故车",
    "泡水车",
    "火烧车",
    "调表",
    "公里数",
    "表显",
    "车龄",
    "保值率",
    "绿本",
    "交强险",
    "商业险",
    "购置税",
    "年检",
    "违章",
    "国六",
    "排放标准",
    "车源",
    "车商",
    "试驾",
    "变速箱",
    "按揭车",
    "抵押车",
    "4S店",
    "自动挡",
    "宝马",
    "奔驰",
    "奥迪",
    "丰田",
    "本田",
    "比亚迪",
    "特斯拉",
)


def make_namespace() -> Namespace:
    """Build the namespace this plugin supplies (also handy for tests and tools)."""
    return Namespace(
        name=NAME,
        title=TITLE,
        description=DESCRIPTION,
        keywords=KEYWORDS,
        templates_dir=HERE / "templates",
        corpus_dir=HERE / "corpus",
        record_filter=has_phone_number,
    )


@hookimpl
def register_namespaces(register):
    register(make_namespace())
