"""Several campaigns of the same arms and settings analysed as one (``tp analyze A B ...``).

Pooling is refused, one line per mismatch, unless every campaign has the same arms (names,
baseline) and every arm the same settings in every campaign (model, task and its parameters,
max tokens, temperature, pipeline and its parameters, LR, steps, batch and group size, LoRA
rank, eval settings, loss); a seed may appear in one campaign only (a pair counts once).

The rule that keeps "run another campaign" valid: **each campaign is a look**. Campaigns are
taken in the order given (the order they were run); look k holds the seed pairs of campaigns
1..k, and the pooled result is judged as the last look of a Lan–DeMets group-sequential design
over those looks (``textpolicy.analysis.sequential``) — never at the fixed-design α. If an
earlier look already crosses its boundary the procedure stops there. The pooled report gives
every look and the stage-wise ordering p. Valid when no earlier campaign was itself declared at
the fixed α (that would have spent all of α); plan the campaigns as looks from the start.

``tp analyze A B ...`` and a ``kind = "pool"`` spec (``tp run pool.toml``) both call
:func:`analyze_pooled`; ``spending`` is ``"obrien-fleming"`` (default) or ``"pocock"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from textpolicy.analysis.campaign import discover_arms
from textpolicy.analysis.jsonl import read_json
from textpolicy.errors import ConfigError

#: the rule, stated where the user meets it (tp analyze --help, the pooled report's first lines)
LOOK_RULE = ("A campaign added after looking at an earlier result counts as a look: each "
             "campaign is a look, in the order given (the order they were run), and the pooled "
             "result is judged at its look's group-sequential boundary, never at the "
             "fixed-design alpha. Valid only if no earlier campaign was itself declared "
             "significant at the fixed alpha.")

#: TrainConfig settings that must agree for runs to be pooled (seed and log_dir may differ)
SETTINGS = ("model", "task", "task_params", "engine", "max_tokens", "temperature", "pipeline",
            "pipeline_params", "lr", "max_steps", "batch_size", "group_size", "lora_rank",
            "eval_every", "eval_samples", "eval_prompts", "eval_temperature", "max_examples",
            "loss", "loss_aggregation")


@attrs.frozen
class Pooled:
    arms: dict[str, list[Path]]  # arm → run dirs of every campaign, campaign order
    baseline: str
    campaigns: tuple[Path, ...]
    seeds: tuple[tuple[int, ...], ...]  # per campaign, its seeds (of the baseline arm)


def _settings(run: Path) -> dict[str, Any]:
    path = run / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run}: no config.json; pooling needs the runs' settings")
    data = read_json(path)
    cfg = dict(data.get("config") or {})
    out = {k: cfg.get(k) for k in SETTINGS}
    out["model"] = data.get("model", cfg.get("model"))  # the resolved model
    out["seed"] = data.get("seed", cfg.get("seed"))
    return out


def run_seed(run: Path) -> int | None:
    """The seed a run's config.json records."""
    seed = _settings(run)["seed"]
    return None if seed is None else int(seed)


def pool_campaigns(dirs: Sequence[str | os.PathLike[str]]) -> Pooled:
    """Check that ``dirs`` can be pooled (ConfigError: one line per mismatch) and merge."""
    roots = [Path(d) for d in dirs]
    problems: list[str] = []
    found = [discover_arms(r) for r in roots]
    arms0, base0, _ = found[0]
    ref: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[str, int], Path] = {}
    repeated: dict[tuple[Path, str, Path], list[int]] = {}
    merged: dict[str, list[Path]] = {name: [] for name in arms0}
    seeds: list[tuple[int, ...]] = []
    for root, (arms, base, _manifest) in zip(roots, found, strict=True):
        if set(arms) != set(arms0):
            problems.append(f"{root}: arms {sorted(arms)} differ from {sorted(arms0)} in "
                            f"{roots[0]}; pooled campaigns need the same arms")
            continue
        if base != base0:
            problems.append(f"{root}: baseline {base!r} differs from {base0!r} in {roots[0]}")
        camp_seeds: list[int] = []
        for name, runs in arms.items():
            for run in runs:
                s = _settings(run)
                seed = s.pop("seed")
                if name not in ref:
                    ref[name] = s
                for key in SETTINGS:  # one line per campaign, arm and setting
                    if s[key] != ref[name][key]:
                        problems.append(f"{root}: arm {name!r}: {key} {s[key]!r} differs "
                                        f"from {ref[name][key]!r} in {roots[0]}")
                if seed is not None:
                    where = seen.get((name, int(seed)))
                    if where is not None and where != root:
                        repeated.setdefault((root, name, where), []).append(int(seed))
                    seen[(name, int(seed))] = root
                    if name == base0:
                        camp_seeds.append(int(seed))
                merged[name].append(run)
        seeds.append(tuple(camp_seeds))
    for (root, name, where), dup in repeated.items():
        problems.append(f"{root}: arm {name!r}: seed(s) {', '.join(map(str, dup))} also in "
                        f"{where}; a seed pair counts once")
    if problems:
        lines = list(dict.fromkeys(problems))
        head = f"cannot pool {len(roots)} campaigns ({len(lines)} problem" \
               f"{'s' if len(lines) != 1 else ''}):"
        raise ConfigError("\n".join([head, *lines]))
    return Pooled(merged, base0, tuple(roots), tuple(seeds))


def pooled_looks(pooled: Pooled, *, alpha: float, num_resamples: int, seed: int,
                 spending: str = "obrien-fleming") -> dict[str, Any]:
    """Each campaign a look: the primary test on campaigns 1..k, the design's boundaries,
    the decisions and the stage-wise p (the ``"sequential"`` record format)."""
    from textpolicy.analysis.sequential import decide, design_record, primary_at_look, stagewise_p

    cumulative: list[int] = []
    total = 0
    for s in pooled.seeds:
        total += len(s)
        cumulative.append(total)
    design = design_record(cumulative, alpha=alpha, spending=spending, futility="none")
    design["campaigns"] = [str(c) for c in pooled.campaigns]
    looks: list[dict[str, Any]] = []
    p_values: list[float] = []
    final = None
    for k in range(len(cumulative)):
        wanted = {s for camp in pooled.seeds[:k + 1] for s in camp}
        arms = {name: [r for r in runs if run_seed(r) in wanted]
                for name, runs in pooled.arms.items()}
        prim = primary_at_look(arms, baseline=pooled.baseline, alpha=alpha,
                               num_resamples=num_resamples, seed=seed)
        p_values.append(prim["p_value"])
        look = decide(cumulative, p_values, alpha=alpha, spending=spending)[-1]
        looks.append({**attrs.asdict(look), **{key: prim[key] for key in (
            "test", "delta_pp", "t", "df", "endpoint")}, "seeds": sorted(wanted),
            "campaign": str(pooled.campaigns[k])})
        if look.decision != "continue":
            final = {"p_value_stagewise": stagewise_p(cumulative, stop_look=k, z=look.z,
                                                      alpha=alpha, spending=spending),
                     "look": k + 1, "seed_pairs": cumulative[k], "decision": look.decision,
                     "ordering": "stage-wise (Armitage; Fairbanks & Madsen 1982)"}
            break
    status = ("in_progress" if final is None else
              "stopped_efficacy" if final["decision"] == "reject" else "completed")
    return {"design": design, "looks": looks, "status": status,
            "stopped_at_look": final["look"] if final else None, "final": final,
            "pooled": True}


def analyze_pooled(dirs: Sequence[str | os.PathLike[str]], *, alpha: float = 0.05,
                   num_resamples: int = 20000, seed: int = 0,
                   spending: str = "obrien-fleming", mde: float | None = None,
                   paired: bool | None = None, partial: bool = False,
                   margin_pp: float | None = None) -> tuple[Any, dict[str, Any]]:
    """Pool ``dirs`` (refused: ``ConfigError``, one line per mismatch), judge each campaign
    as a look and analyse the seeds of the campaigns up to the look the procedure stopped at.
    Returns the significance report of those seeds and the ``"sequential"`` record."""
    from textpolicy.analysis import evaluate_significance
    from textpolicy.analysis.sequential import spending_function

    spending_function(0.5, alpha=alpha, spending=spending)  # an unknown name: ConfigError
    pooled = pool_campaigns(dirs)
    seq = pooled_looks(pooled, alpha=alpha, num_resamples=num_resamples, seed=seed,
                       spending=spending)
    seq["rule"] = LOOK_RULE
    used = set(seq["looks"][-1]["seeds"])  # the campaigns up to the look it stopped at
    arms = {name: [r for r in runs if run_seed(r) in used]
            for name, runs in pooled.arms.items()}
    report = evaluate_significance(arms, baseline=pooled.baseline, alpha=alpha,
                                   num_resamples=num_resamples, seed=seed, mde=mde,
                                   paired=paired, partial=partial, margin_pp=margin_pp)
    return report, seq
