"""A bot process for the crash and ordering tests: handles a list of messages, logging each reply.

Usage: python handle_stream.py MESSAGES.jsonl OUT.log
Settings come from the environment (WXHELPER_DATA_DIR, WXHELPER_STORE, OPENAI_*, …).
Each reply is appended to OUT as one line ``message_id<TAB>json`` with a single write and an fsync,
so a SIGKILL leaves either the whole line or none of it (a torn tail is ignored by the reader).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from wxhelper import Host, InboundMessage, Settings


async def main(messages_path: str, out_path: str) -> None:
    messages = [json.loads(line) for line in open(messages_path, encoding="utf-8") if line.strip()]
    fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async with Host(Settings()) as host:
        print("ready", flush=True)
        for item in messages:
            reply = await host.handle(InboundMessage(**item))
            line = json.dumps({"message_id": reply.message_id, "text": reply.text,
                               "prompt": reply.prompt}, ensure_ascii=False)
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
    os.close(fd)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
