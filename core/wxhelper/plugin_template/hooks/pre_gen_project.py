"""Reject answers that would produce a plugin the host cannot load (run by cookiecutter before generating)."""

import re
import sys

ANSWERS = {
    "name": """{{ cookiecutter.name }}""",
    "title": """{{ cookiecutter.title }}""",
    "description": """{{ cookiecutter.description }}""",
    "author": """{{ cookiecutter.author }}""",
    "keywords": """{{ cookiecutter.keywords }}""",
    "project_slug": """{{ cookiecutter.project_slug }}""",
    "package": """{{ cookiecutter.package }}""",
}

errors = []
if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", ANSWERS["name"]):
    errors.append(f"name {ANSWERS['name']!r}: use lowercase ASCII letters, digits and _, starting with a letter "
                  f"(it becomes the namespace name, a storage key and part of the package name)")
if not ANSWERS["title"].strip() or any(c in ANSWERS["title"] for c in "|/\\:*" + chr(123) + chr(125)):
    errors.append(f"title {ANSWERS['title']!r}: must be non-empty, without | / \\ : * or braces")
for field in ("title", "description", "author", "keywords"):
    if any(c in ANSWERS[field] for c in '"\\\n'):
        errors.append(f"{field}: no double quotes, backslashes or line breaks, please")
keywords = [k.strip() for k in re.split(r"[,，、]", ANSWERS["keywords"]) if k.strip()]
if not keywords:
    errors.append("keywords: give at least one (comma-separated); messages containing them are routed to you")
if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", ANSWERS["project_slug"]):
    errors.append(f"project_slug {ANSWERS['project_slug']!r} is not a valid distribution name")
if not ANSWERS["package"].isidentifier() or not ANSWERS["package"].isascii():
    errors.append(f"package {ANSWERS['package']!r} is not a valid Python package name")

if errors:
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    sys.exit(1)
