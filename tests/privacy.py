"""What the tests that scan logs, spans and metrics for personal data look for."""
from __future__ import annotations

import re

# Anything shaped like an address: loose on purpose (a missed address leaks, a false alarm is read once)
LOOKS_LIKE_EMAIL = re.compile(r"[^\s@<>\"'(),;:\[\]=]+@[^\s@<>\"'(),;:\[\]]+\.[^\s@<>\"'(),;:\[\]]+")
