"""wxhelper.blas: one BLAS thread in server workers and benchmarks, unless the operator chose a count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
from threadpoolctl import threadpool_info
from wxhelper.blas import one_blas_thread
changed = one_blas_thread()
print(json.dumps({"changed": changed, "threads": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]}))
"""


def _probe(env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", "import numpy\n" + PROBE], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_one_blas_thread_limits_numpys_blas() -> None:
    got = _probe({})
    assert got["changed"] is True and got["threads"] and set(got["threads"]) == {1}


def test_an_operators_thread_count_is_kept() -> None:
    got = _probe({"OPENBLAS_NUM_THREADS": "2"})
    assert got["changed"] is False and (2 in got["threads"] or os.cpu_count() == 1)
