"""Built-in named pipelines: the baseline, the full candidate and the 2×5 ablation grid.

``<episode>+<transform>`` with episode ∈ {grpo, maxrl} and transform ∈ {none, gtpo, gtpo_hicra,
gtpo_sepa, gtpo_sepa_hicra}. ``grpo`` is ``grpo+none``, ``maxrl`` is ``maxrl+none`` and ``full``
(the seed document's ``--algorithm full``, "MaxRL+GTPO+HICRA+SEPA") is ``maxrl+gtpo_sepa_hicra``
= maxrl → sepa → gtpo → hicra: SEPA pools the token signal that GTPO then weights by.
"""

from __future__ import annotations

from collections.abc import Iterable

from textpolicy.plugins import hookimpl
from textpolicy.records import NamedPipeline, StageRef

TRANSFORMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "gtpo": ("gtpo",),
    "gtpo_hicra": ("gtpo", "hicra"),
    "gtpo_sepa": ("sepa", "gtpo"),
    "gtpo_sepa_hicra": ("sepa", "gtpo", "hicra"),
}

_CANONICAL = {"grpo+none": "grpo", "maxrl+none": "maxrl", "maxrl+gtpo_sepa_hicra": "full"}

_DOCS = {
    "grpo": "GRPO baseline: A = r - mean(r) per group, same advantage on every token",
    "maxrl": "MaxRL: A = (r - m)/(m + eps) per group, same advantage on every token",
    "full": "the full candidate: maxrl > sepa > gtpo > hicra (MaxRL+GTPO+HICRA+SEPA)",
}


def _pipelines() -> list[NamedPipeline]:
    out = []
    for episode in ("grpo", "maxrl"):
        for transform, stages in TRANSFORMS.items():
            cell = f"{episode}+{transform}"
            name = _CANONICAL.get(cell, cell)
            aliases = (cell,) if name != cell else ()
            doc = _DOCS.get(name, f"ablation cell: {' > '.join((episode, *stages))}")
            out.append(NamedPipeline(
                name=name, stages=[StageRef(stage=s) for s in (episode, *stages)],
                doc=doc, aliases=aliases))
    return out


PIPELINES: tuple[NamedPipeline, ...] = tuple(_pipelines())


@hookimpl
def textpolicy_register_pipelines() -> Iterable[NamedPipeline]:
    return PIPELINES
