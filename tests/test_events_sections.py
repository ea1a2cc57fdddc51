"""A console event's history sections: who contributed what, counted in one pass (wxhelper.events._section)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from wxhelper.events import _section, per_user
from wxhelper.messages import Record


def _reference(records: list[Record]) -> tuple[int, list[dict]]:
    """The counts as first written: a row per user, sorted by characters, records, then user id."""
    users: dict[str, dict] = {}
    for record in records:
        entry = users.setdefault(record.user_id, {"user_id": record.user_id, "records": 0, "chars": 0})
        entry["records"] += 1
        entry["chars"] += len(record.content)
    rows = sorted(users.values(), key=lambda u: (-u["chars"], -u["records"], u["user_id"]))
    return sum(len(r.content) for r in records), rows


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "用户", ""]), st.text(max_size=12)), max_size=60))
def test_the_counts_and_their_order_are_the_reference(rows):
    records = [Record(user_id=user, source_id="s", bot_id="b", content=content, timestamp=float(i), message_id=f"m{i}")
               for i, (user, content) in enumerate(rows)]
    assert _section(records) == _reference(records)
    assert per_user(records) == _reference(records)[1]


def test_ties_are_broken_by_records_then_user_id():
    records = [Record(user_id=u, source_id="s", bot_id="b", content=c, timestamp=float(i), message_id=f"m{i}")
               for i, (u, c) in enumerate([("b", "xx"), ("a", "xx"), ("c", "x"), ("c", "x"), ("d", "xxxx")])]
    assert [row["user_id"] for row in per_user(records)] == ["d", "c", "a", "b"]
    assert _section(records)[0] == 10
