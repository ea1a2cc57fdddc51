"""The built-in general-chat namespace (``DEFAULT_NAME_SPACE``, default 聊天).

It is registered through the same hook as any third-party plugin, so the host
has no special path for it: messages no plugin claims land here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .hookspecs import hookimpl
from .namespace import Namespace
from .phone import has_phone_number
from .settings import Settings

HERE = Path(__file__).parent


@hookimpl
def register_namespaces(register: Callable[[Namespace], None], settings: Settings) -> None:
    register(
        Namespace(
            name=settings.default_namespace,
            title=settings.default_namespace,
            description="通用聊天：闲聊、问答，以及本助手的使用说明。",
            keywords=(),
            templates_dir=HERE / "templates" / "default",
            corpus_dir=HERE / "corpus",
            record_filter=has_phone_number,
        )
    )
