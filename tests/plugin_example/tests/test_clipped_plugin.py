"""The plugin's own tests, written with textpolicy.testing (run: pytest tests/)."""

from __future__ import annotations

import numpy as np
from textpolicy_clipped import plugin

from textpolicy.plugins import build_registry
from textpolicy.testing import check_stage, make_rollouts


def test_clip_keeps_the_invariants() -> None:
    registry = build_registry(extra_plugins=[("clipped-under-test", plugin)],
                              load_entry_points=False)
    rollouts = make_rollouts(rewards=[1] + [0] * 15, group_size=16, length=6)
    result = check_stage("clip", rollouts, params={"limit": 2.0}, registry=registry)
    assert np.abs(result.token_advantages).max() == 2.0
