"""Shared test setup: offline everything, one torch thread, a fresh plugin registry."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TINKER_TELEMETRY", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    from textpolicy.plugins import reset_registry

    reset_registry()
    yield
    reset_registry()
