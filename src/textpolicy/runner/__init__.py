"""The runner: spec files → plans → executed sweeps, campaigns and experiments.

Public entry points::

    from textpolicy.runner import Spec, run_spec, Options
    spec = Spec.from_toml("examples/quickstart.toml")   # validated; SpecError lists problems
    outcome = run_spec(spec, Options(execute=True))
"""

from __future__ import annotations

from textpolicy.runner.api import Options, Outcome, run_spec
from textpolicy.runner.spec import Spec, SpecError

__all__ = ["Options", "Outcome", "Spec", "SpecError", "run_spec"]
