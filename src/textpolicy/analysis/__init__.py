"""Analysis of A/B campaigns of RL training runs: valid significance tests, power, reports.

Reads run directories only (config.json, metrics.jsonl, emergence/*.jsonl, eval.jsonl). The
unit of analysis is the seed: runs are paired by seed, the primary endpoint is held-out
accuracy, the primary test a paired t over seed pairs (exact sign-flip p beside it), Holm across
candidate arms. See docs/statistics.md.

Entry points: ``analyze_campaign``, ``evaluate_significance``, ``evaluate_sepa_significance``,
``build_sepa_significance_markdown``. Attributes are imported lazily (scipy is heavy).
"""

from __future__ import annotations

import importlib
from typing import Any

from textpolicy.analysis.records import (
    AnalysisInput,
    AnalysisWarning,
    TestResult,
    not_applicable,
)

_LAZY: dict[str, str] = {
    "analyze_campaign": "campaign",
    "discover_arms": "campaign",
    "write_outputs": "campaign",
    "comparison_dict": "campaign",
    "evaluate_significance": "report",
    "evaluate_sepa_significance": "report",
    "SignificanceReport": "report",
    "Comparison": "report",
    "build_sepa_significance_markdown": "markdown",
    "RunData": "rundata",
    "pass_at_k": "design",
    "group_sequential_boundaries": "sequential",
}

__all__ = [
    "AnalysisInput",
    "AnalysisWarning",
    "Comparison",
    "RunData",
    "SignificanceReport",
    "TestResult",
    "analyze_campaign",
    "build_sepa_significance_markdown",
    "comparison_dict",
    "discover_arms",
    "evaluate_sepa_significance",
    "evaluate_significance",
    "group_sequential_boundaries",
    "not_applicable",
    "pass_at_k",
    "write_outputs",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'textpolicy.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"textpolicy.analysis.{module}"), name)
    globals()[name] = value
    return value
