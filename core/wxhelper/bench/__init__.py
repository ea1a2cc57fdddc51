"""``wxhelper bench …``: speed and memory figures, measured side by side in one run.

Targets live here, not in timed tests: these machines are noisy, so each
benchmark reports medians and ratios of things measured in the same run.
"""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Benchmarks (history, fairness, …); each prints a table and can write JSON."""


from . import fairness as _fairness  # noqa: E402,F401  (registers `bench fairness`)
from . import history as _history  # noqa: E402,F401  (registers `bench history`)
from . import serve as _serve  # noqa: E402,F401  (registers `bench serve`)
from . import retrieval as _retrieval  # noqa: E402,F401  (registers `bench retrieval`)
