"""wxhelper: a plugin host for LLM chat bots.

Public API::

    from wxhelper import Host, InboundMessage, Reply, Namespace, hookimpl, Settings
"""

from .hookspecs import hookimpl
from .host import Host, SyncHost
from .messages import InboundMessage, Passage, Record, Reply
from .namespace import Namespace
from .settings import Settings

__all__ = ["Host", "SyncHost", "InboundMessage", "Reply", "Record", "Passage", "Namespace", "hookimpl", "Settings"]
