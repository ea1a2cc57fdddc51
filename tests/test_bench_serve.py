"""``wxhelper bench serve`` itself, small: a real Redis, the stand-in LLM and ``wxhelper serve`` with 1 and 2 workers.

The figures are not checked (they are the benchmark's business, docs/performance.md); that the
benchmark runs end to end and reports every field its readers use is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_bench_serve_runs_one_and_two_workers_and_reports_each_worker_and_the_calibration(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WXHELPER_", "REDIS_", "OPENAI_"))}
    env.update({"WXHELPER_EMBEDDING": "hashed", "HOME": str(tmp_path)})
    done = subprocess.run([sys.executable, "-m", "wxhelper", "bench", "serve", "--messages", "64", "--warmup", "8",
                           "--quiet", "8", "--workers", "1,2", "--json"], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["shared_socket"] is False and report["stand_in"] == "lean"
    one, two = report["rows"]
    assert (one["workers"], two["workers"]) == (1, 2)
    for row in (one, two):
        assert row["messages"] == 64 and row["msg_per_s"] > 0 and row["store"] == "redis"
        assert set(row["cpu_ms_per_msg"]) == {"server", "driver", "llm", "redis"}
        assert row["cpu_ms_per_msg"]["server"] > 0 and row["unloaded_overhead_p50_ms"] is not None
        assert set(row["stage_p50_ms"]) == {"history", "retrieval", "assembly"}
        before, after = row["calibration_ms"]
        assert 0 < before < 1000 and 0 < after < 1000
    assert one["worker_cpu_ms_per_msg"] == []
    # 32 connections spread by the kernel over two sockets: both workers worked
    assert len(two["worker_cpu_ms_per_msg"]) == 2, two
