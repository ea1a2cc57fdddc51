"""Chat commands: ``/分类``, ``/切换|<名称>``, ``/新增分类|<名称>``, ``/删除分类|<名称>[|确认]``, and plugins' own.

A message whose first ``|``-separated part is a registered command name is a
command: it is answered by its handler, never sent to the LLM and never
recorded. Adding and deleting categories changes what every user of the bot
sees, so only the bot's owners (``BOT_OWNER_IDS``) may do it; deleting also
drops the category's histories, so it asks for a confirmation first.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, Union

from .messages import InboundMessage
from .namespace import NAME_PATTERN

if TYPE_CHECKING:
    from .host import Host

log = logging.getLogger(__name__)

CommandHandler = Callable[["CommandContext", list[str]], Union[str, Awaitable[str]]]
CONFIRM = "确认"
REFUSED = "只有机器人的主人可以使用这个命令。"


@dataclass
class CommandContext:
    host: "Host"
    message: InboundMessage
    bot_id: str
    source_id: str
    is_owner: bool


@dataclass
class Command:
    name: str
    handler: CommandHandler
    help: str = ""
    owner_only: bool = False
    plugin: str = "wxhelper"


@dataclass
class CommandSet:
    commands: dict[str, Command] = field(default_factory=dict)

    def add(self, command: Command) -> Optional[str]:
        """Register; returns an error text (and keeps the first) on a clash or a bad name."""
        if not command.name or any(ch in command.name for ch in "|/ \t\n"):
            return f"command name {command.name!r} is invalid: non-empty, no '/', '|' or whitespace"
        if not callable(command.handler):
            return f"command {command.name!r}: handler is not callable"
        owner = self.commands.get(command.name)
        if owner is not None:
            return f"command /{command.name} clashes with {owner.plugin!r}, which registered it first; ignored"
        self.commands[command.name] = command
        return None

    def parse(self, content: str) -> Optional[tuple[Command, list[str]]]:
        text = content.strip()
        if not text.startswith("/"):
            return None
        name, *args = [part.strip() for part in text[1:].split("|")]
        command = self.commands.get(name)
        return (command, args) if command else None


async def run_command(command: Command, ctx: CommandContext, args: list[str]) -> str:
    if command.owner_only and not ctx.is_owner:
        return REFUSED
    result = command.handler(ctx, args)
    if inspect.isawaitable(result):
        result = await result
    return str(result)


# -- the built-in commands ------------------------------------------------------------

async def list_categories(ctx: CommandContext, args: list[str]) -> str:
    namespaces = await ctx.host.namespaces_for(ctx.bot_id)
    bound = await ctx.host.store.get_binding(ctx.source_id, ctx.bot_id)
    lines = ["可用分类："]
    for ns in namespaces.values():
        kind = "自定义" if ns.plugin == "custom" else "预置"
        mark = "（当前）" if ns.name == bound else ""
        title = ns.title if ns.title == ns.name else f"{ns.title}（{ns.name}）"
        lines.append(f"- {title} [{kind}]{mark}")
    lines.append("切换：/切换|名称")
    return "\n".join(lines)


async def switch_category(ctx: CommandContext, args: list[str]) -> str:
    if not args or not args[0]:
        return "用法：/切换|名称"
    ns = (await ctx.host.namespaces_for(ctx.bot_id)).get(args[0]) or ctx.host.find_namespace(
        await ctx.host.namespaces_for(ctx.bot_id), args[0])
    if ns is None:
        return f"没有名为「{args[0]}」的分类。发送 /分类 查看全部。"
    await ctx.host.store.set_binding(ctx.source_id, ctx.bot_id, ns.name)
    return f"已切换到「{ns.title}」。"


class CategoryError(ValueError):
    """A category cannot be added or deleted; the text says why (in the users' language)."""


async def create_category(host: "Host", bot_id: str, name: str, title: Optional[str] = None) -> str:
    """Add a custom category for ``bot_id`` (chat command and operator console alike); returns its name."""
    title = (title or name).strip()
    if not NAME_PATTERN.match(name):
        raise CategoryError("分类名称需为 1-64 个字符，不能包含空格和 / | \\ : { } *。")
    if not title or len(title) > 64:
        raise CategoryError("分类标题需为 1-64 个字符。")
    existing = await host.namespaces_for(bot_id)
    if host.find_namespace(existing, name) is not None or host.find_namespace(existing, title) is not None:
        raise CategoryError(f"分类「{name}」已经存在。")
    await host.store.add_custom_namespace(bot_id, name, title)
    host.forget_categories(bot_id)
    log.info("bot %s: custom namespace added", bot_id)
    return name


async def remove_category(host: "Host", bot_id: str, name: str) -> tuple[str, int]:
    """Delete a custom category of ``bot_id`` and, unless another bot still has it, its histories.

    Returns ``(title, records dropped)``. Callers ask for the confirmation first.
    """
    namespaces = await host.namespaces_for(bot_id)
    ns = host.find_namespace(namespaces, name)
    if ns is None:
        raise CategoryError(f"没有名为「{name}」的分类。")
    if ns.plugin != "custom":
        raise CategoryError(f"「{ns.title}」是预置分类，不能删除。")
    await host.store.delete_custom_namespace(bot_id, ns.name)
    host.forget_categories(bot_id)
    still_used = any(n == ns.name for _bot, n, _title in await host.store.custom_namespaces())
    dropped = 0 if still_used else await host.store.clear_namespace(ns.name)
    log.info("bot %s: custom namespace deleted, %d records dropped", bot_id, dropped)
    return ns.title, dropped


async def add_category(ctx: CommandContext, args: list[str]) -> str:
    if not args or not args[0]:
        return "用法：/新增分类|名称"
    try:
        name = await create_category(ctx.host, ctx.bot_id, args[0])
    except CategoryError as exc:
        return str(exc)
    return f"已新增分类「{name}」。"


async def delete_category(ctx: CommandContext, args: list[str]) -> str:
    if not args or not args[0]:
        return "用法：/删除分类|名称"
    name = args[0]
    ns = ctx.host.find_namespace(await ctx.host.namespaces_for(ctx.bot_id), name)
    if ns is not None and ns.plugin == "custom" and (len(args) < 2 or args[1] != CONFIRM):
        return f"删除分类「{ns.title}」会清空它的全部记录。确认请发送：/删除分类|{ns.name}|{CONFIRM}"
    try:
        title, dropped = await remove_category(ctx.host, ctx.bot_id, name)
    except CategoryError as exc:
        return str(exc)
    return f"已删除分类「{title}」，清除了 {dropped} 条记录。"


BUILTIN_COMMANDS = (
    Command("分类", list_categories, "列出全部分类"),
    Command("切换", switch_category, "把当前群或私聊固定到一个分类：/切换|名称"),
    Command("新增分类", add_category, "新增自定义分类（仅主人）：/新增分类|名称", owner_only=True),
    Command("删除分类", delete_category, "删除自定义分类及其记录（仅主人）：/删除分类|名称|确认", owner_only=True),
)


def build_commands(pm: Any, statuses: dict) -> CommandSet:
    """The built-ins first, then each plugin's ``register_commands``, each plugin in its own ``try``."""
    commands = CommandSet()
    for command in BUILTIN_COMMANDS:
        commands.add(command)
    for impl in pm.hook.register_commands.get_hookimpls():
        status = statuses.get(impl.plugin_name)

        def register(name: str, handler: CommandHandler, help: str = "", owner_only: bool = False,
                     _plugin: str = impl.plugin_name, _status: Any = status) -> None:
            error = commands.add(Command(name, handler, help, owner_only, _plugin))
            if error and _status is not None:
                _status.errors.append(error)
                log.error("plugin %s: %s", _plugin, error)

        try:
            impl.function(register=register)
        except Exception as exc:
            if status is not None:
                status.errors.append(f"register_commands raised {type(exc).__name__}: {exc}")
            log.error("plugin %s: register_commands raised %s", impl.plugin_name, type(exc).__name__)
    return commands
