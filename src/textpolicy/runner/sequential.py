"""Sequential campaigns: seeds run in waves, the primary test after each wave (a look).

With ``[sequential] looks = [4, 8, 12, 16]`` the campaign runs seeds[:4] of every arm, analyses
them (the analysis's primary test, p against the look's Lan–DeMets threshold), then seeds[4:8],
and so on; it stops at the first look whose p crosses the boundary, at a non-binding futility
stop, or at the last look. manifest.json holds the design and every look under
``"sequential"``. A look once recorded is final: re-running resumes at the next look (its runs
are skipped when finished) and never recomputes a recorded look with more data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from textpolicy.errors import ConfigError
from textpolicy.runner import manifest as mf
from textpolicy.runner.execute import RunResult
from textpolicy.runner.plan import Plan
from textpolicy.runner.spec import Spec

EXIT_OK = 0


def spec_problems(spec: Spec, raw: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...],
                                                                        str]]:
    """Cross-field rules of ``[sequential]`` (specload reports them like every problem)."""
    from textpolicy.analysis.records import MIN_SEED_PAIRS

    seq = spec.sequential
    if seq is None:
        return
    if spec.kind == "sweep":
        yield ("sequential",), "not used by kind 'sweep'; allowed: kind = 'campaign' or " \
                               "'experiment'"
        return
    if seq.looks and seq.looks[-1] > len(spec.seeds):
        yield ("sequential", "looks"), (f"the last look ({seq.looks[-1]} seed pairs) exceeds "
                                        f"the {len(spec.seeds)} seeds planned; allowed: "
                                        "looks <= the number of seeds")
    if seq.looks and seq.looks[0] < MIN_SEED_PAIRS:
        yield ("sequential", "looks"), (f"the first look must have at least {MIN_SEED_PAIRS} "
                                        "seed pairs (the primary test's minimum)")
    if len(spec.arms) != 2:
        yield ("sequential",), (f"a sequential campaign compares exactly two arms, got "
                                f"{len(spec.arms)}; allowed: one baseline and one candidate")
    if not spec.analysis.enabled:
        yield ("analysis", "enabled"), "a sequential campaign analyses after every wave; " \
                                       "allowed: true"


def _state(spec: Spec) -> dict[str, Any]:
    from textpolicy.analysis.sequential import design_record

    seq = spec.sequential
    assert seq is not None
    design = design_record(seq.looks, alpha=spec.analysis.alpha, spending=seq.spending,
                           futility=seq.futility)
    design["seeds"] = [int(s) for s in spec.seeds[:seq.looks[-1]]]
    return {"design": design, "looks": [], "status": "in_progress", "stopped_at_look": None,
            "final": None}


def _previous(root: Path) -> dict[str, Any] | None:
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        import json

        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    seq = data.get("sequential") if isinstance(data, dict) else None
    return seq if isinstance(seq, dict) else None


_DESIGN_KEYS = ("looks", "alpha", "spending", "futility", "seeds")


def _resume_state(spec: Spec, root: Path) -> dict[str, Any]:
    """The recorded state when it is the same design; a changed design after a look is
    refused (ConfigError, before anything is written)."""
    fresh = _state(spec)
    old = _previous(root)
    if old is None or not old.get("looks"):
        return fresh
    before = {k: old.get("design", {}).get(k) for k in _DESIGN_KEYS}
    now = {k: fresh["design"][k] for k in _DESIGN_KEYS}
    if before != now:
        changed = ", ".join(k for k in _DESIGN_KEYS if before[k] != now[k])
        raise ConfigError(f"sequential: {root / 'manifest.json'} records {len(old['looks'])} "
                          f"look(s) of a different design ({changed} changed); a design cannot "
                          "change after a look; allowed: the recorded design, or a new output")
    fresh["looks"] = list(old["looks"])
    for key in ("status", "stopped_at_look", "final"):
        fresh[key] = old.get(key, fresh[key])
    return fresh


def _write(spec: Spec, plan: Plan, tuned: dict[str, float] | None,
           selection: Mapping[str, Any] | None, results: Sequence[RunResult],
           state: dict[str, Any], status: str) -> None:
    from textpolicy.runner import campaign as cmp

    data = cmp.manifest_data(spec, plan, status=status, results=results, tuned=tuned,
                             selection=selection)
    data["sequential"] = state
    mf.write_json(plan.root / "manifest.json", data)


def _arm_dirs(spec: Spec, plan: Plan, seeds: Sequence[int]) -> dict[str, list[Path]]:
    wanted = set(seeds)
    out: dict[str, list[Path]] = {}
    for arm in spec.arms:
        out[arm.label] = [plan.root / r.key for r in plan.runs
                          if r.arm == arm.label and r.seed in wanted]
    return out


def campaign(spec: Spec, plan: Plan, tuned: dict[str, float] | None,
             selection: Mapping[str, Any] | None = None, *,
             run_wave: Callable[[Plan], list[RunResult]],
             check: Callable[[list[RunResult]], int],
             echo: Callable[[str], None]) -> tuple[int, str, dict[str, Any]]:
    """Run the waves of a sequential campaign; return (exit code, manifest status, state)."""
    from textpolicy.analysis.sequential import Look, decide, stagewise_p

    seq = spec.sequential
    assert seq is not None
    state = _resume_state(spec, plan.root)
    plan.root.mkdir(parents=True, exist_ok=True)
    mf.write_run_commands(plan, header=[
        f"sequential campaign {spec.name}: arms {', '.join(a.label for a in spec.arms)}; "
        f"seeds {', '.join(map(str, spec.seeds))}; looks at {seq.looks} seed pairs (tp run "
        "runs the waves and stops at a crossed boundary)"])
    results: dict[str, RunResult] = {}
    _write(spec, plan, tuned, selection, [], state,
           "running" if state["status"] == "in_progress" else "finished")
    if state["looks"]:
        echo(f"Sequential: {len(state['looks'])} look(s) recorded; "
             + ("the procedure has stopped." if state["status"] != "in_progress" else
                f"continuing at look {len(state['looks']) + 1}."))
    for k, n in enumerate(seq.looks):
        if state["status"] != "in_progress":
            break
        if k < len(state["looks"]):
            continue  # a recorded look is final: never recomputed with more data
        seeds = list(spec.seeds[:n])
        wave = attrs.evolve(plan, runs=tuple(r for r in plan.runs if r.seed in set(seeds)))
        echo(f"Sequential look {k + 1}/{len(seq.looks)}: seeds {seeds[0]}..{seeds[-1]} "
             f"({n} pairs)")
        wave_results = run_wave(wave)
        for r in wave_results:
            results[r.key] = r
        code = check(wave_results)  # a look needs every pair of its wave
        if code != EXIT_OK:
            _write(spec, plan, tuned, selection, list(results.values()), state, "incomplete")
            return code, "incomplete", state
        primary = _primary(spec, plan, seeds)
        p_values = [lk["p_value"] for lk in state["looks"]] + [primary["p_value"]]
        decided = decide(seq.looks, p_values, alpha=spec.analysis.alpha,
                         spending=seq.spending, futility=seq.futility)
        look: Look = decided[-1]
        record = {**attrs.asdict(look), **{k2: primary[k2] for k2 in (
            "test", "delta_pp", "t", "df", "endpoint")}, "seeds": seeds, "at": mf.now()}
        state["looks"].append(record)
        echo(f"  {primary['test']}: Δ = {_fmt(primary['delta_pp'])} pp, p = "
             f"{look.p_value:.4g} vs boundary {look.threshold:.4g} → {look.decision}")
        if look.decision != "continue":
            state["status"] = {"reject": "stopped_efficacy", "futility": "stopped_futility",
                               "accept": "completed"}[look.decision]
            state["stopped_at_look"] = k + 1
            sp = stagewise_p(seq.looks, stop_look=k, z=look.z, alpha=spec.analysis.alpha,
                             spending=seq.spending)
            state["final"] = {"p_value_stagewise": sp, "look": k + 1, "seed_pairs": n,
                              "decision": look.decision,
                              "ordering": "stage-wise (Armitage; Fairbanks & Madsen 1982)"}
        _write(spec, plan, tuned, selection, list(results.values()), state,
               "finished" if state["status"] != "in_progress" else "running")
    return EXIT_OK, "finished", state


def _primary(spec: Spec, plan: Plan, seeds: Sequence[int]) -> dict[str, Any]:
    from textpolicy.analysis.sequential import primary_at_look

    return primary_at_look(_arm_dirs(spec, plan, seeds), baseline=spec.baseline_arm.label,
                           alpha=spec.analysis.alpha, num_resamples=spec.analysis.resamples,
                           seed=spec.analysis.seed)


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):+.2f}"


def report_text(root: Path) -> str:
    """The sequential section of a campaign's report (from its manifest)."""
    from textpolicy.analysis.sequential import campaign_dir_state, report_markdown

    state = campaign_dir_state(root)
    return report_markdown(state) if state is not None else ""


def describe(spec: Spec) -> str:
    """One line: the design and its nominal p thresholds (printed when a campaign is planned)."""
    from textpolicy.analysis.sequential import group_sequential_boundaries

    seq = spec.sequential
    assert seq is not None
    thr = group_sequential_boundaries(seq.looks, alpha=spec.analysis.alpha,
                                      spending=seq.spending)
    return (f"Sequential: looks at {', '.join(map(str, seq.looks))} seed pairs, {seq.spending} "
            f"spending (two-sided alpha {spec.analysis.alpha:g}): nominal p thresholds "
            f"{', '.join(f'{t:.3g}' for t in thr)}; futility {seq.futility}")
