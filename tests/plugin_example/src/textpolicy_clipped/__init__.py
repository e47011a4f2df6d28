"""Example third-party textpolicy plugin (see docs/plugins.md)."""
