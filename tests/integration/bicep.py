"""Parsing the Bicep templates for the infra tests: one parser for every file and test module, since building one (its
grammar) costs about a second of CPU and parsing a file far less."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

INFRA = Path(__file__).resolve().parents[2] / "infra"


@lru_cache(maxsize=1)
def _parser() -> Any:
    from pycep import BicepParser  # pycep-parser, pinned in requirements-dev.txt

    return BicepParser()


@lru_cache(maxsize=256)
def parse_text(text: str) -> dict[str, Any]:
    return _parser().parse(text=text)


def infra_doc(rel: str) -> dict[str, Any]:
    """infra/<rel>, parsed."""
    return parse_text((INFRA / rel).read_text(encoding="utf-8"))
