"""The plugin template, end to end, as a plugin author uses it (like simonw/llm-plugin's template test).

``wxhelper new-plugin`` generates a project in a temporary directory; it is pip-installed into this
environment (and uninstalled at the end, so no other test sees it), its own generated tests pass,
``wxhelper namespaces`` lists it, ``wxhelper ask`` gets an answer from it and ``wxhelper check``
finds nothing wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from wxhelper.scaffold import TEMPLATE_DIR

ANSWERS = {"name": "tplcheck", "title": "模板自检", "description": "由插件模板生成、用于自检的频道",
           "author": "wxhelper CI", "keywords": "模板自检词，样板问答、tplcheckword"}
DIST = "wxhelper-tplcheck"
PACKAGE = "wxhelper_tplcheck"


def run(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, WXHELPER_LOG_LEVEL="WARNING", **(env or {}))
    return subprocess.run(list(args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def new_plugin_args(output_dir: Path, **answers: str) -> list[str]:
    args = [sys.executable, "-m", "wxhelper", "new-plugin", "--no-input", "--output-dir", str(output_dir)]
    for key, value in answers.items():
        args += [f"--{key}", value]
    return args


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    result = run(*new_plugin_args(out, **ANSWERS), cwd=out)
    assert result.returncode == 0, result.stderr
    assert f"created {out / DIST}" in result.stdout
    return out / DIST


@pytest.fixture(scope="module")
def installed(generated: Path) -> Iterator[Path]:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    result = run(*pip, "install", "-q", str(generated), cwd=generated)
    assert result.returncode == 0, result.stderr
    try:
        yield generated
    finally:
        run(*pip, "uninstall", "-y", "-q", DIST, cwd=generated)


def test_the_generated_project_has_everything_a_plugin_needs(generated):
    files = sorted(p.relative_to(generated).as_posix() for p in generated.rglob("*") if p.is_file())
    assert {"pyproject.toml", "README.md", ".gitignore", f"{PACKAGE}/__init__.py", f"{PACKAGE}/templates/system.j2",
            "tests/test_tplcheck.py"} <= set(files)
    assert len([f for f in files if f.startswith(f"{PACKAGE}/corpus/") and f.endswith(".md")]) >= 3
    pyproject = (generated / "pyproject.toml").read_text(encoding="utf-8")
    assert f'[project.entry-points.wxhelper]\ntplcheck = "{PACKAGE}"' in pyproject
    assert f'{PACKAGE} = ["templates/*.j2", "corpus/*"]' in pyproject
    assert 'authors = [{ name = "wxhelper CI" }]' in pyproject
    code = (generated / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    assert '"模板自检词",\n    "样板问答",\n    "tplcheckword",\n)' in code
    assert "record_filter=has_phone_number" in code
    # the system template is copied, not rendered by cookiecutter: it stays a template for the host
    assert "{{ namespace.title }}" in (generated / PACKAGE / "templates" / "system.j2").read_text(encoding="utf-8")
    assert "模板自检" in (generated / PACKAGE / "corpus" / "how-to-use.md").read_text(encoding="utf-8")


def test_cookiecutter_on_the_template_path_makes_the_same_project(generated, tmp_path):
    args = [f"{k}={v}" for k, v in ANSWERS.items()]
    result = run(sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path), str(TEMPLATE_DIR), *args,
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    other = tmp_path / DIST

    def tree(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts
                and ".egg-info" not in p.as_posix() and "build/" not in p.relative_to(root).as_posix()}

    assert tree(other) == tree(generated)


@pytest.mark.parametrize("answers, reason", [
    ({"name": "Bad Name"}, "name 'Bad Name': use lowercase ASCII letters"),
    ({"name": "ok_name", "keywords": " , "}, "keywords: give at least one"),
    ({"name": "ok_name", "title": 'a "quoted" title'}, "title: no double quotes"),
])
def test_bad_answers_are_rejected_before_anything_is_written(tmp_path, answers, reason):
    result = run(*new_plugin_args(tmp_path, **answers), cwd=tmp_path)
    assert result.returncode != 0
    assert reason in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_generated_tests_pass_against_the_installed_plugin(installed):
    result = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=installed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout


def test_wxhelper_lists_the_namespace_and_answers_from_it(installed, tmp_path):
    env = {"WXHELPER_DATA_DIR": str(tmp_path / "data")}
    listed = run(sys.executable, "-m", "wxhelper", "namespaces", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout) if r["status"] == "loaded"}
    assert rows["tplcheck"]["title"] == "模板自检" and rows["tplcheck"]["plugin"] == DIST
    assert rows["tplcheck"]["errors"] == [] and rows["tplcheck"]["version"] == "0.1.0"
    assert {"car_client", "qzzp", "lvyou"} <= set(rows)  # the others are untouched

    asked = run(sys.executable, "-m", "wxhelper", "ask", "模板自检词在群里怎么发布信息？", "--user", "alice", "--json", cwd=tmp_path, env=env)
    assert asked.returncode == 0, asked.stderr
    reply = json.loads(asked.stdout)
    assert reply["namespace"] == "tplcheck"
    assert reply["answered"] and reply["text"] and reply["retrieved"]
    assert any(p["source"] == "posting-guidelines.md" for p in reply["retrieved"])
    assert "「模板自检」频道" in reply["prompt"][0]["content"]

    checked = run(sys.executable, "-m", "wxhelper", "check", DIST, cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "tplcheck (模板自检): ok" in checked.stdout
