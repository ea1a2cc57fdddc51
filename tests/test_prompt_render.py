"""The prompt renderer's fast paths keep the sandbox's behaviour."""

from __future__ import annotations

import time

import pytest
from jinja2.sandbox import SecurityError

from wxhelper.messages import InboundMessage, Passage, Record
from wxhelper.namespace import Namespace
from wxhelper.prompt import _environment, format_timestamp


def render(tmp_path, source: str, **context) -> str:
    (tmp_path / "t.j2").write_text(source, encoding="utf-8")
    return _environment([tmp_path]).get_template("t.j2").render(**context)


def test_data_fields_read_through_the_fast_path_are_the_values(tmp_path):
    r = Record(user_id="u", source_id="g", bot_id="b", content="{{ 7*7 }}", timestamp=1.5, message_id="m")
    p = Passage(text="t", source="s.md", heading="h", score=0.5)
    m = InboundMessage(user_id="u", group_id="g", content="c")
    ns = Namespace(name="n", title="T", keywords=("k",))
    out = render(tmp_path, "{{ r.content }}|{{ r.timestamp }}|{{ p.heading }}|{{ m.group_id }}|{{ m.is_group }}"
                           "|{{ ns.title }}|{{ ns.keywords[0] }}", r=r, p=p, m=m, ns=ns)
    assert out == "{{ 7*7 }}|1.5|h|g|True|T|k"


@pytest.mark.parametrize("expr", ["r.__class__", "r.__dict__", "m._ids", "ns.__class__.__mro__",
                                  "r.model_dump.__globals__"])
def test_the_sandbox_still_refuses_internals(tmp_path, expr):
    r = Record(user_id="u", source_id="g", bot_id="b", content="c", timestamp=1.0, message_id="m")
    m = InboundMessage(user_id="u", content="c")
    ns = Namespace(name="n", title="T")
    with pytest.raises(SecurityError):
        render(tmp_path, "{{ " + expr + " }}", r=r, m=m, ns=ns)


def test_datetime_filter_formats_every_second_of_a_minute_alike():
    now = time.time()
    for value in (now, now - 59.9, 0, 1_700_000_000.999, "1700000000"):
        expected = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(value)))
        assert format_timestamp(value) == expected
    assert format_timestamp("not a time") == "not a time"
    assert format_timestamp(float("nan")) == "nan"
    assert format_timestamp(float("inf")) == "inf"
