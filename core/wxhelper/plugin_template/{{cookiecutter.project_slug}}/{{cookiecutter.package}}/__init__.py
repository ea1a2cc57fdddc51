{%- set kws = cookiecutter.keywords.replace('，', ',').replace('、', ',').split(',') | map('trim') | select | list -%}
"""wxhelper plugin: the ``{{ cookiecutter.name }}`` namespace ({{ cookiecutter.title }}).

{{ cookiecutter.description }}

The host finds this module through the ``wxhelper`` entry point in pyproject.toml
and calls its hooks (see wxhelper's docs/plugins.md for the whole contract).
"""

from __future__ import annotations

from pathlib import Path

from wxhelper import Namespace, hookimpl
from wxhelper.phone import has_phone_number

HERE = Path(__file__).parent

NAME = "{{ cookiecutter.name }}"
TITLE = "{{ cookiecutter.title }}"
DESCRIPTION = "{{ cookiecutter.description }}"

# A message is routed to the namespace whose keywords it contains most (case-insensitive
# substring match). Prefer specific words: a short one also matches inside unrelated words.
KEYWORDS: tuple[str, ...] = (
{%- for k in kws %}
    "{{ k }}",
{%- endfor %}
)


def make_namespace() -> Namespace:
    """The namespace this plugin supplies (also handy in tests and tools)."""
    return Namespace(
        name=NAME,
        title=TITLE,
        description=DESCRIPTION,
        keywords=KEYWORDS,
        templates_dir=HERE / "templates",  # system.j2: the system prompt
        corpus_dir=HERE / "corpus",  # .md / .txt / .jsonl files, indexed for retrieval
        # Only messages this filter accepts go on the namespace board and the friend circle,
        # the histories shared by every chat: here, posts carrying a valid phone number.
        record_filter=has_phone_number,
    )


@hookimpl
def register_namespaces(register):
    register(make_namespace())


@hookimpl
def prompt_context(namespace, message):
    """Extra variables for system.j2, available there as ``extra``; None for other namespaces."""
    if namespace.name != NAME:
        return None
    return {"chat_kind": "群聊" if message.is_group else "私聊"}
