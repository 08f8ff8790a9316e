"""The audience mirror's contacts for assertions: its stored lines decoded (planning decodes only those it needs)."""
from __future__ import annotations

from collections.abc import Iterable

from shared.members import Contact, ExistingMember, line_contact


def decoded(contacts: Iterable[Contact]) -> list[ExistingMember]:
    return [c if isinstance(c, ExistingMember) else line_contact(c) for c in contacts]
