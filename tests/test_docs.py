"""Docs are part of the contract: an undocumented hook or setting fails the build (as datasette does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wxhelper import hookspecs
from wxhelper.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(n for n in dir(hookspecs) if callable(getattr(hookspecs, n))
               and hasattr(getattr(hookspecs, n), "wxhelper_spec"))


def test_hooks_found():
    assert "register_namespaces" in HOOKS and "prompt_context" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    assert f"### `{hook}`" in (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_spec(hook):
    assert len((getattr(hookspecs, hook).__doc__ or "").strip()) > 80


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook):
    tests = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")
                      if p.name != "test_docs.py")
    assert re.search(rf"def {hook}\(", tests), f"no test implements {hook}"


def _env_names() -> list[str]:
    names = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if alias is not None:
            names.append(alias.choices[0])  # type: ignore[union-attr]
    return names


@pytest.mark.parametrize("name", _env_names())
def test_every_setting_is_documented(name):
    assert f"`{name}`" in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci
