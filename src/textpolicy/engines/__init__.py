"""Engines: where sampling and training happen (``local`` embedded, ``tinker`` remote)."""
