"""Task types of the publish example."""

from __future__ import annotations

from typing import Any

TASK_TYPES: dict[str, Any] = {}
