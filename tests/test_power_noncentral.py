"""The scipy noncentral-t power (no statsmodels import in ``tp analyze``) equals TTestPower."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from statsmodels.stats.power import TTestPower

from textpolicy.analysis import power


def test_paired_t_power_equals_statsmodels() -> None:
    tt = TTestPower()
    for es in (0.05, 0.3, 0.8, 1.5, 4.0):
        for n in (2, 3, 5, 8, 17, 60):
            for alpha in (0.05, 0.01):
                ours = power.paired_t_power(es, n, alpha=alpha)
                ref = tt.power(effect_size=es, nobs=n, alpha=alpha)
                if math.isnan(ref):  # scipy's nct tail is NaN: statsmodels gives up there
                    assert ours == pytest.approx(1.0, abs=1e-6)
                else:
                    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_seeds_and_mde_equal_statsmodels_solve_power() -> None:
    tt = TTestPower()
    rng = np.random.default_rng(2)
    for _ in range(25):
        sd, delta = float(rng.uniform(0.5, 5)), float(rng.uniform(0.2, 4))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n = float(np.asarray(tt.solve_power(effect_size=delta / sd, nobs=None, alpha=0.05,
                                                power=0.8)).item())
        if math.isfinite(n) and n >= 2:
            assert power.t_seeds(sd, delta) == math.ceil(n - 1e-9)
    for n_pairs in (2, 3, 4, 8, 30):
        es = float(np.asarray(tt.solve_power(effect_size=None, nobs=n_pairs, alpha=0.05,
                                             power=0.8)).item())
        assert power.t_mde(2.0, n_pairs) == pytest.approx(2.0 * es, rel=1e-6)


def test_analysis_does_not_import_statsmodels() -> None:
    import subprocess
    import sys

    code = ("import sys; from textpolicy.analysis import report, markdown, campaign; "
            "print(any(m.startswith('statsmodels') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
