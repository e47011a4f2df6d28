"""A token-level advantage stage ``clip`` and a pipeline ``maxrl+clip`` that uses it.

``clip`` bounds every token advantage to ``[-limit, limit]``: MaxRL gives a lone correct
completion in a group of 16 an advantage of 15; clipping keeps such outliers in check.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import numpy as np

from textpolicy import hookimpl
from textpolicy.pipeline import StepContext, TokenCredit, number_field
from textpolicy.records import AdvantageStage, NamedPipeline, StageRef
from textpolicy.rollouts import Rollouts


@attrs.frozen
class ClipParams:
    """``limit``: largest absolute token advantage kept."""

    limit: float = number_field(5.0, gt=0.0)


def clip_stage(credit: TokenCredit, rollouts: Rollouts, ctx: StepContext,
               params: ClipParams) -> TokenCredit:
    # one vectorised operation over the padded [N, T] array; padding stays 0
    return attrs.evolve(credit, advantages=np.clip(credit.advantages, -params.limit,
                                                   params.limit))


@hookimpl
def textpolicy_register_stages() -> Iterable[AdvantageStage]:
    return [AdvantageStage(name="clip", level="token", fn=clip_stage, params=ClipParams,
                           doc="clip token advantages to [-limit, limit]")]


@hookimpl
def textpolicy_register_pipelines() -> Iterable[NamedPipeline]:
    return [NamedPipeline(name="maxrl+clip",
                          stages=[StageRef("maxrl"), StageRef("clip", {"limit": 3.0})],
                          doc="MaxRL with token advantages clipped to [-3, 3]")]
