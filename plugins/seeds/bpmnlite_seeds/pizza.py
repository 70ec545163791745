"""Task types of the pizza example."""

from __future__ import annotations

from typing import Any

TASK_TYPES: dict[str, Any] = {}
