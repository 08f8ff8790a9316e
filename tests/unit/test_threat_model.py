"""docs/threat-model.md backs each claim with a test: every bullet of a **Can**, **Cannot** or **Cannot see** list
names at least one `tests/...py::test_name`, and each one named exists: the file is there and defines that test
function (found with `ast`, not a text search, so a name in a comment or a string does not count)."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DOC = ROOT / "docs" / "threat-model.md"
LABELS = ("Can", "Cannot", "Cannot see")  # the bold labels that open a list of claims
CITATION = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")
FILE = re.compile(r"(tests/[\w/]+\.py)(?!::)")


@dataclass(frozen=True)
class Bullet:
    section: str
    label: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.section}, {self.label}): {self.text[:90]}..."


def claims(markdown: str) -> list[Bullet]:
    """The bullets under each **Can** / **Cannot** / **Cannot see** label, continuation lines joined."""
    bullets: list[Bullet] = []
    section, label = "", None
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.startswith("#"):
            section, label = line.lstrip("#").strip(), None
        elif line.startswith("**"):
            bold = re.fullmatch(r"\*\*([^*]+)\*\*\s*", line)
            label = bold[1] if bold and bold[1] in LABELS else None
        elif label is None or not line.strip():
            continue
        elif line.startswith("- "):
            bullets.append(Bullet(section, label, number, line[2:].strip()))
        elif line.startswith("  ") and bullets and bullets[-1].label == label:
            last = bullets.pop()
            bullets.append(Bullet(last.section, last.label, last.line, f"{last.text} {line.strip()}"))
        else:
            label = None  # a paragraph after the list ends it
    return bullets


@cache
def defined_tests(path: str) -> frozenset[str]:
    """The test functions a file defines, at module level or in a test class; empty when there is no such file."""
    file = ROOT / path
    if not file.is_file():
        return frozenset()
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=path)
    found = set()
    for node in tree.body:
        bodies = node.body if isinstance(node, ast.ClassDef) else [node]
        found |= {n.name for n in bodies if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return frozenset(name for name in found if name.startswith("test_"))


def problems(bullets: list[Bullet]) -> list[str]:
    found = []
    for bullet in bullets:
        cited = CITATION.findall(bullet.text)
        if not cited:
            found.append(f"cites no test: {bullet}")
        found += [f"cites {path}::{name}, which does not exist: {bullet}"
                  for path, name in cited if name not in defined_tests(path)]
        if "test pending" in bullet.text:
            found.append(f"says a test is pending: {bullet}")
    return found


def test_every_can_and_cannot_bullet_cites_a_test_that_exists() -> None:
    bullets = claims(DOC.read_text(encoding="utf-8"))
    by_label = {label: sum(b.label == label for b in bullets) for label in LABELS}
    # the parser still sees the document's lists: 4 kinds of access, their Can and Cannot (see) claims
    assert len({b.section for b in bullets}) >= 4 and by_label["Can"] >= 5 and by_label["Cannot"] >= 15, by_label
    assert by_label["Cannot see"] >= 3, by_label
    found = problems(bullets)
    assert not found, "docs/threat-model.md:\n" + "\n".join(found)


def test_every_test_and_test_file_the_threat_model_names_exists() -> None:
    """Outside the bullets too ("Not protected" paragraphs, the introduction); a file named alone must hold tests."""
    text = DOC.read_text(encoding="utf-8")
    missing = [f"{path}::{name}" for path, name in CITATION.findall(text) if name not in defined_tests(path)]
    missing += [path for path in FILE.findall(text) if not defined_tests(path)]
    assert not missing, f"docs/threat-model.md names tests that do not exist: {missing}"
    assert "test pending" not in text, "a claim in docs/threat-model.md still waits for its test"


def test_the_check_catches_a_bullet_without_a_test_a_missing_test_and_a_misspelt_one() -> None:
    doc = """### 9. Someone

**Can**

- Do one thing: `tests/unit/test_threat_model.py::test_every_can_and_cannot_bullet_cites_a_test_that_exists`.
- Do another thing, spread over
  two lines, with no test.

**Cannot**

- Do a third thing: `tests/unit/test_threat_model.py::test_that_was_renamed`.
- Do a fourth: `tests/unit/no_such_file.py::test_every_can_and_cannot_bullet_cites_a_test_that_exists`.
- Do a fifth (test pending: one day), `tests/unit/test_threat_model.py::defined_tests` is no test.

**Not protected**: anything said here is no bullet of a list.

- Nor is this, under a label that opens no list.
"""
    bullets = claims(doc)
    assert [(b.label, b.line) for b in bullets] == [("Can", 5), ("Can", 6), ("Cannot", 11), ("Cannot", 12),
                                                   ("Cannot", 13)]
    assert bullets[1].text == "Do another thing, spread over two lines, with no test."
    found = problems(bullets)
    assert [p.split(":")[0] for p in found] == ["cites no test", "cites tests/unit/test_threat_model.py",
                                                "cites tests/unit/no_such_file.py", "cites no test",
                                                "says a test is pending"], found
