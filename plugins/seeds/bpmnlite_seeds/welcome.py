"""Task types of the welcome example."""

from __future__ import annotations

from typing import Any

TASK_TYPES: dict[str, Any] = {}
