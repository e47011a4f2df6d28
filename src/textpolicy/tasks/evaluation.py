"""Held-out evaluation helpers shared by every task."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from textpolicy.errors import ConfigError


def pass_at_k_many(n: ArrayLike, c: ArrayLike, k: int) -> NDArray[np.float64]:
    """Unbiased pass@k per problem from ``n`` samples of which ``c`` are correct (Chen et al.
    2021), vectorised over arrays of problems.

    ``1 - C(n - c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)``, the product taken as
    a difference of prefix sums of ``log(1 - k / i)`` so no binomial coefficient is ever
    formed (stable for large n). 1 when ``n - c < k``; exactly ``c / n`` for k = 1.
    ``ConfigError`` when ``n < k`` or the counts are impossible.
    """
    n_arr = np.asarray(n, dtype=np.int64)
    c_arr = np.asarray(c, dtype=np.int64)
    if k < 1:
        raise ConfigError(f"pass@k: k must be >= 1, got {k}")
    if (n_arr < k).any():
        raise ConfigError(
            f"pass@k: need at least k={k} samples per prompt, got n={int(n_arr.min())}")
    if ((c_arr < 0) | (c_arr > n_arr)).any():
        raise ConfigError(f"pass@k: correct counts must lie in [0, n]; got c={c_arr} n={n_arr}")
    if k == 1:
        return np.asarray(c_arr / n_arr, dtype=np.float64)
    fail = n_arr - c_arr
    out = np.ones(np.broadcast(n_arr, c_arr).shape, dtype=np.float64)
    live = fail >= k
    if live.any():
        n_live = np.broadcast_to(n_arr, out.shape)[live]
        i = np.arange(k + 1, int(n_live.max()) + 1, dtype=np.float64)
        # prefix[m] = sum_{i=k+1}^{m} log(1 - k/i); every factor of a live product has i > k
        prefix = np.concatenate([np.zeros(k + 1), np.cumsum(np.log1p(-k / i))])
        out[live] = 1.0 - np.exp(prefix[n_live] - prefix[fail[live]])
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem (see ``pass_at_k_many``)."""
    return float(pass_at_k_many(n, c, k))
