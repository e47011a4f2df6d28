"""The order in which a run visits training examples (a pure function of seed and step).

Epoch 0 is ``task.train_examples(seed)`` (the task's seeded order, optionally cut to the first
``max_examples``); every later epoch is a permutation of that list drawn from
``numpy.random.default_rng([seed, epoch])``. Step ``s`` uses the ``batch_size`` consecutive
positions starting at ``s * batch_size``, so the data cursor of a checkpoint is just
``step * batch_size`` and a resumed run sees exactly the examples an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from textpolicy.errors import TaskError
from textpolicy.tasks.base import Example


class DataOrder:
    """Seeded, epoch-reshuffled order of training examples."""

    def __init__(self, examples: Sequence[Example], seed: int) -> None:
        if not examples:
            raise TaskError("the task returned no training examples")
        self._examples = list(examples)
        self._seed = seed
        self._epochs: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._examples)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._epochs:
            n = len(self._examples)
            if epoch == 0:
                order = np.arange(n)
            else:
                order = np.random.default_rng([self._seed, epoch]).permutation(n)
            if len(self._epochs) > 4:
                self._epochs.clear()
            self._epochs[epoch] = order
        return self._epochs[epoch]

    def at(self, position: int) -> Example:
        """The example at global position ``position`` (0-based, across epochs)."""
        n = len(self._examples)
        epoch, offset = divmod(position, n)
        return self._examples[int(self._order(epoch)[offset])]

    def batch(self, step: int, batch_size: int) -> list[Example]:
        """The ``batch_size`` examples of training step ``step``."""
        start = step * batch_size
        return [self.at(start + i) for i in range(batch_size)]
