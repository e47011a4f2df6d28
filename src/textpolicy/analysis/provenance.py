"""Where a campaign's learning rates came from, and whether that choice can leak into the verdict.

An LR chosen on the campaign's own test prompts, or by probes that share a seed with a
campaign run (a campaign run at a probe's seed and LR replays that probe step for step), makes
the verdict depend on the choice. The runner records the sweep's ``selection`` (metric, split,
seeds, the prompt ids it evaluated) in the campaign manifest as ``lr_selection``; this module
compares it with the campaign's seeds and endpoint prompts and says what it finds in one
sentence for significance.md / significance.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textpolicy.wording import plural


def _seeds_text(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds))


def lr_selection(manifest: Mapping[str, Any], *, campaign_seeds: Sequence[int],
                 endpoint_prompts: Sequence[str]) -> dict[str, Any] | None:
    """The ``lr_selection`` section of a report (None: the manifest says nothing about LRs).

    ``campaign_seeds``: the seeds of the analysed runs; ``endpoint_prompts``: the prompt ids of
    the primary endpoint. ``independent`` is True only when the split is recorded and neither
    seeds nor prompts overlap.
    """
    raw_arms = manifest.get("arms")
    arms: list[Any] = raw_arms if isinstance(raw_arms, list) else []
    swept = [str(a.get("name")) for a in arms
             if isinstance(a, Mapping) and a.get("lr_source") == "sweep"]
    selection = manifest.get("lr_selection")
    if not isinstance(selection, Mapping):
        if not swept:
            return None
        return {"arms": swept, "split": None, "seeds": None, "seed_overlap": None,
                "prompt_overlap": None, "independent": False,
                "statement": (f"The LRs of {', '.join(swept)} were tuned by a sweep whose split "
                              "and seeds are not recorded: it may have used this campaign's "
                              "test prompts or seeds.")}
    split = selection.get("split")
    sweep_seeds = [int(s) for s in selection.get("seeds") or ()]
    seed_overlap = sorted(set(sweep_seeds) & {int(s) for s in campaign_seeds})
    chosen_on = {str(p) for p in selection.get("prompt_ids") or ()}
    prompt_overlap = sorted(chosen_on & {str(p) for p in endpoint_prompts})
    metric = selection.get("metric")
    n_prompts = selection.get("n_prompts")
    if split is None:
        where = "an unrecorded split"
    elif split == "train":
        where = "the final running correct rate on training prompts"
    else:
        where = (f"{split} accuracy" + (f" over {plural(int(n_prompts), 'prompt')}"
                                        if n_prompts else ""))
    head = (f"LRs chosen by {where} at probe step {selection.get('probe_steps', '?')}, sweep "
            f"seeds {_seeds_text(sweep_seeds) or '?'}")
    problems = []
    if seed_overlap:
        one = len(seed_overlap) == 1
        problems.append(f"campaign seed{'' if one else 's'} {_seeds_text(seed_overlap)} "
                        f"{'was' if one else 'were'} also sweep seeds (those runs replay probes "
                        "at the chosen LR)")
    if prompt_overlap:
        problems.append(f"{len(prompt_overlap)} of the {len(endpoint_prompts)} endpoint prompts "
                        "took part in choosing the LRs")
    if split is None:
        problems.append("the split that chose them is not recorded")
    independent = not problems
    if independent:
        statement = (f"{head}: disjoint from this campaign's seeds and test prompts, so the "
                     "choice does not leak into the verdict.")
    else:
        statement = (f"{head}. Overlap with this campaign: {'; '.join(problems)}: the verdict "
                     "is not independent of the LR choice.")
    return {"arms": swept, "metric": metric, "split": split, "seeds": sweep_seeds,
            "probe_steps": selection.get("probe_steps"), "n_prompts": n_prompts,
            "sweep_results": selection.get("sweep_results"), "campaign_seeds":
            sorted(int(s) for s in campaign_seeds), "seed_overlap": seed_overlap,
            "prompt_overlap": len(prompt_overlap), "prompt_overlap_ids": prompt_overlap[:10],
            "independent": independent, "statement": statement}
