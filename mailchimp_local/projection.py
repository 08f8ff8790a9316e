"""Mailchimp's `fields` / `exclude_fields`: dot-notation paths that trim an answer (lists apply to each item)."""
from __future__ import annotations

from typing import Any

Tree = dict[str, "Tree"]


def paths(values: list[str]) -> Tree | None:
    """Both `fields=a,b` and `fields=a&fields=b` (how an OpenAPI array travels) are accepted."""
    tree: Tree = {}
    for value in values:
        for item in value.split(","):
            node = tree
            for part in filter(None, item.strip().split(".")):
                node = node.setdefault(part, {})
    return tree or None


def keep(doc: Any, tree: Tree) -> Any:
    if isinstance(doc, list):
        return [keep(item, tree) for item in doc]
    if not isinstance(doc, dict):
        return doc
    return {key: (keep(doc[key], sub) if sub else doc[key]) for key, sub in tree.items() if key in doc}


def drop(doc: Any, tree: Tree) -> Any:
    if isinstance(doc, list):
        return [drop(item, tree) for item in doc]
    if not isinstance(doc, dict):
        return doc
    return {key: (drop(value, tree[key]) if key in tree else value)
            for key, value in doc.items() if key not in tree or tree[key]}
