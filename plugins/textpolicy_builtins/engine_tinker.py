"""Built-in engine_tinker plugin (placeholder until its issue lands)."""

from __future__ import annotations
