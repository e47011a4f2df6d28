"""Held-out evaluation helpers shared by every task."""

from __future__ import annotations

import numpy as np

from textpolicy.errors import ConfigError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021).

    ``1 - C(n - c, k) / C(n, k)``, evaluated as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)`` so no
    binomial coefficient is ever formed (stable for large n). 1.0 when ``n - c < k``;
    ``ConfigError`` when ``n < k`` or the counts are impossible.
    """
    if k < 1:
        raise ConfigError(f"pass@k: k must be >= 1, got {k}")
    if n < k:
        raise ConfigError(f"pass@k: need at least k={k} samples per prompt, got n={n}")
    if not 0 <= c <= n:
        raise ConfigError(f"pass@k: correct count c={c} must lie in [0, n={n}]")
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))
