"""Running bot processes for the reliability tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

WORKER = Path(__file__).parent / "workers" / "handle_stream.py"


def write_messages(path: Path, messages: list[dict]) -> Path:
    path.write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in messages), encoding="utf-8")
    return path


def worker_env(data_dir: Path, store: Optional[str] = None, llm=None, **extra: str) -> dict:  # type: ignore[no-untyped-def]
    env = dict(os.environ, WXHELPER_DATA_DIR=str(data_dir), WXHELPER_LOAD_PLUGINS="", WXHELPER_LOG_LEVEL="WARNING",
               WXHELPER_LLM_MAX_RETRIES="0", WXHELPER_EMBEDDING="hashed")
    if store:
        env["WXHELPER_STORE"] = store
    if llm is not None:
        env.update(OPENAI_API_KEY=llm.api_key, OPENAI_BASE_URL=llm.base_url)
    env.update(extra)
    return env


def start_worker(messages: Path, out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(messages), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "worker did not start"
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]


def read_log(out: Path) -> list[dict]:
    if not out.exists():
        return []
    lines = out.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:-1] if line]  # the last piece is "" or a torn line
