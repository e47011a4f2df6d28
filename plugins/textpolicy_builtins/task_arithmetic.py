"""Built-in task_arithmetic plugin (placeholder until its issue lands)."""

from __future__ import annotations
