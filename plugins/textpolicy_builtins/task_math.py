"""Built-in task_math plugin (placeholder until its issue lands)."""

from __future__ import annotations
