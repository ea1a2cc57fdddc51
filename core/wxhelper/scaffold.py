"""``wxhelper new-plugin``: a new namespace plugin from the cookiecutter template shipped in this package.

The template is ``wxhelper/plugin_template/`` (``cookiecutter.json`` and
``{{cookiecutter.project_slug}}/…``); ``cookiecutter <that directory>`` works
the same. Everything is local, so it works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

TEMPLATE_DIR = Path(__file__).parent / "plugin_template"
"""The cookiecutter template; ``wxhelper new-plugin`` runs cookiecutter's Python API on it."""


def create_plugin(output_dir: Path, *, no_input: bool = True, overwrite: bool = False, **answers: str) -> Path:
    """Generate a plugin project in ``output_dir``; ``answers`` are cookiecutter variables (``name``, ``title``…)."""
    from cookiecutter.main import cookiecutter

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    path = cookiecutter(str(TEMPLATE_DIR), no_input=no_input, extra_context=answers, output_dir=str(output_dir),
                        overwrite_if_exists=overwrite)
    return Path(path)


@click.command("new-plugin")
@click.option("--name", help="Namespace name: lowercase ASCII letters, digits and _, starting with a letter (fangchan).")
@click.option("--title", help="What users call it and type in /切换|<title> (房产).")
@click.option("--description", help="One line: what the namespace answers.")
@click.option("--author", help="Your name, for pyproject.toml.")
@click.option("--keywords", help="Routing keywords, comma-separated (租房,二手房,房东).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where the project directory is created.")
@click.option("--no-input", is_flag=True, help="Do not prompt: use the options given and the template's defaults.")
@click.option("--overwrite", is_flag=True, help="Write into an existing project directory.")
def new_plugin(name: Optional[str], title: Optional[str], description: Optional[str], author: Optional[str],
               keywords: Optional[str], output_dir: Path, no_input: bool, overwrite: bool) -> None:
    """Create a namespace plugin project from the shipped cookiecutter template."""
    from cookiecutter.exceptions import CookiecutterException, FailedHookException, OutputDirExistsException

    answers = {k: v for k, v in dict(name=name, title=title, description=description, author=author,
                                     keywords=keywords).items() if v is not None}
    try:
        path = create_plugin(output_dir, no_input=no_input, overwrite=overwrite, **answers)
    except FailedHookException as exc:
        raise click.ClickException(f"invalid answer (see the message above): {exc}") from exc
    except OutputDirExistsException as exc:
        raise click.ClickException(f"{exc}; pass --overwrite to write into it") from exc
    except CookiecutterException as exc:
        raise click.ClickException(str(exc)) from exc
    dist = path.name
    click.echo(f"created {path}\n\nnext steps:\n"
               f"  cd {path}\n"
               f"  python -m pip install -e '.[test]'\n"
               f"  python -m pytest\n"
               f"  wxhelper check {dist}\n"
               f"  wxhelper namespaces\n"
               f"  wxhelper ask \"...\" --user me   # a message with one of your keywords")
