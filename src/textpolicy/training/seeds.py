"""Seeds derived from a run's one seed: every random choice of a run flows from ``config.seed``.

``derive_seed(seed, "train", step, group)`` is a stable 31-bit integer (hash of the parts, the
same on every machine and Python version), so seed s gives every arm the same data order, the
same initial weights and the same sampling seeds, and eval prompts get the same sampling seeds
in every arm and at every eval step.

No global random state is used or seeded (Python's ``random``, ``numpy.random``, torch's
default generator): threads of one process share those, so a run that read them would depend
on what the other runs did. Randomness a pipeline stage needs comes from :func:`step_rng`, a
NumPy generator of its own per run and step (``StepContext.rng``); it depends only on the run
seed and the step, so a resumed run draws what the uninterrupted one drew and nothing about it
needs saving in a checkpoint.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SEED_BITS = 31
#: the largest run seed (seeds are 31-bit, like the derived ones)
MAX_SEED = 2**31 - 1


def derive_seed(seed: int, *parts: object) -> int:
    """A stable non-negative 31-bit seed for ``(seed, *parts)``."""
    text = "\x1f".join(str(p) for p in (seed, *parts))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << SEED_BITS) - 1)


def train_sampling_seed(seed: int, step: int, group: int) -> int:
    """Sampling seed of prompt ``group`` of training step ``step``."""
    return derive_seed(seed, "train-sample", step, group)


def eval_sampling_seed(seed: int, prompt_id: str) -> int:
    """Sampling seed of one held-out prompt: identical across arms and eval steps."""
    return derive_seed(seed, "eval-sample", prompt_id)


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator pipeline stages draw from at training step ``step`` of a run with
    ``seed`` (``StepContext.rng``): PCG64 seeded with ``derive_seed(seed, 'step-rng', step)``."""
    import numpy as np

    return np.random.default_rng(derive_seed(seed, "step-rng", step))


def describe_seeds(seed: int) -> dict[str, object]:
    """What config.json records about the run's randomness."""
    return {
        "seed": seed,
        "data_order": f"task.train_examples({seed}); epoch e > 0 reshuffled with "
                      f"numpy.random.default_rng([{seed}, e])",
        "engine_init": seed,
        "train_sampling": "derive_seed(seed, 'train-sample', step, group)",
        "eval_sampling": "derive_seed(seed, 'eval-sample', prompt_id)",
        "stage_rng": "numpy.random.default_rng(derive_seed(seed, 'step-rng', step))",
        "global_rngs": "never seeded or read (Python random, numpy.random, torch)",
        "derive_seed": "blake2b-64 of the parts joined by U+001F, low 31 bits",
    }
