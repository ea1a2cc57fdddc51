"""The answer the host gives without an LLM: the best knowledge passages and board posts.

A fresh machine has no API key, and an LLM may be down; the bot still helps by
quoting what it has, and says plainly that it is offline.
"""

from __future__ import annotations

from typing import Sequence

from .knowledge.embedding import features
from .messages import Passage, Record

OFFLINE_NOTICE = "（离线模式：未连接大模型，以下是资料库和信息板里最相关的内容）"
NOTHING_FOUND = "资料库和信息板里暂时没有找到相关内容，可以换个说法或补充关键词再问。"


def overlap(query: str, text: str) -> float:
    """Share of the query's character n-grams that the text contains."""
    q = set(features(query))
    if not q:
        return 0.0
    return len(q & set(features(text))) / len(q)


def matching_posts(query: str, records: Sequence[Record], limit: int = 3, floor: float = 0.2) -> list[Record]:
    scored = sorted(((overlap(query, r.content), -r.timestamp, i) for i, r in enumerate(records)), reverse=True)
    return [records[i] for score, _, i in scored if score >= floor][:limit]


def offline_answer(query: str, passages: Sequence[Passage], board: Sequence[Record],
                   notice: str = OFFLINE_NOTICE, max_passages: int = 2) -> str:
    lines = [notice]
    for p in list(passages)[:max_passages]:
        title = f"【{p.heading}】" if p.heading else ""
        lines.append(f"{title}{p.text}")
    posts = matching_posts(query, board)
    if posts:
        lines.append("信息板上的相关帖子：")
        lines.extend(f"- {r.user_id}：{r.content}" for r in posts)
    if len(lines) == 1:
        lines.append(NOTHING_FOUND)
    return "\n".join(lines)
