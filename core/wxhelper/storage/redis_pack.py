"""Redis commands packed by hiredis's C packer instead of redis-py's asyncio one.

redis-py's asyncio connection packs a command in Python, one argument at a time, joining the
growing buffer again for each (``Connection.pack_command``): ~145 µs of CPU for a script call with
66 arguments, the shape of a message's two turn scripts (their fair reads, the records written),
which made packing most of the client's CPU for such a call. ``hiredis.pack_command`` (hiredis is
already the reply parser) writes the same bytes in ~14 µs.

Only what both pack alike takes the C path: a command name without spaces, the encoder's default
(UTF-8, strict), and every argument exactly a ``str``, ``bytes``, ``int`` or ``float`` (not ``bool``,
which redis-py refuses, nor a subclass such as an ``IntEnum``, which redis-py writes as its ``repr``).
Anything else goes to redis-py's own method, so its errors (``DataError`` for a ``None``, say) stay
what they were. ``tests/test_redis_pack.py`` compares the bytes of both.
"""

from __future__ import annotations

from typing import Any, Optional

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency of the redis extra
    _hiredis_pack = None

_PLAIN = frozenset({str, bytes, int, float})


class HiredisPacking:
    """Mixed into a redis-py asyncio connection class (see :func:`use_hiredis_packing`)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        encoder = self.encoder  # type: ignore[attr-defined]
        if (_hiredis_pack is not None and args and type(args[0]) is str and " " not in args[0]
                and encoder.encoding == "utf-8" and encoder.encoding_errors == "strict"):
            for arg in args:
                if type(arg) not in _PLAIN:
                    break
            else:
                return [_hiredis_pack(args)]
        return super().pack_command(*args)  # type: ignore[misc]


_classes: dict[type, type] = {}


def hiredis_packing_class(cls: type) -> type:
    """``cls`` (a connection class) with :class:`HiredisPacking` mixed in; one subclass per class."""
    if issubclass(cls, HiredisPacking):
        return cls
    if cls not in _classes:
        _classes[cls] = type(f"HiredisPacking{cls.__name__}", (HiredisPacking, cls), {})
    return _classes[cls]


def use_hiredis_packing(client: Any) -> Any:
    """Make the connections ``client``'s pool opens from now on pack with hiredis (when it is installed).

    For a standalone or Sentinel-managed client (``client.connection_pool``); a client without a
    pool of its own (Redis Cluster's) is left as it is. Returns ``client``.
    """
    pool: Optional[Any] = getattr(client, "connection_pool", None)
    if _hiredis_pack is not None and pool is not None and getattr(pool, "connection_class", None) is not None:
        pool.connection_class = hiredis_packing_class(pool.connection_class)
    return client
