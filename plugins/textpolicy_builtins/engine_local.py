"""Built-in engine_local plugin (placeholder until its issue lands)."""

from __future__ import annotations
