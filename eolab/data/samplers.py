"""How training batches are drawn from the pre-training patches.

``SceneDiverseBatchSampler`` fills each batch from as many scenes as possible and never puts two
overlapping windows of one scene in the same batch. Contrastive objectives use the other samples of
a batch as negatives: windows that overlap (tiles at stride 32 of 64-pixel patches overlap by half)
or a batch filled from one scene make near-duplicate negatives, which the loss then pushes apart
(the failure torchgeo #3548 describes). Plain shuffling allows both.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from torch.utils.data import Sampler


class SceneDiverseBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices into ``tiles`` (rows: scene, row, col), scene-interleaved.

    Each epoch: patches are shuffled within each scene, then dealt round-robin over scenes in a
    random scene order; a patch whose window overlaps one already in the forming batch (same scene,
    less than ``patch`` pixels apart in both axes) waits for a later batch. Only when too few
    non-overlapping windows are left to fill a batch (the end of an epoch over few scenes) do
    overlapping ones fill it. Deterministic per ``seed`` and epoch; the incomplete last batch is
    dropped (as with ``drop_last``).
    """

    def __init__(self, tiles: pd.DataFrame, batch_size: int, patch: int = 64, seed: int = 0):
        missing = [c for c in ("scene", "row", "col") if c not in tiles.columns]
        if missing:
            raise ValueError(f"tiles lack columns {missing} needed for scene-diverse batches")
        self.scene = tiles["scene"].to_numpy()
        self.row, self.col = tiles["row"].to_numpy(), tiles["col"].to_numpy()
        self.batch_size, self.patch, self.seed, self.epoch = batch_size, patch, seed, 0

    def __len__(self) -> int:
        return len(self.scene) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _overlaps(self, i: int, batch: list[int]) -> bool:
        same = [j for j in batch if self.scene[j] == self.scene[i]]
        return any(abs(int(self.row[j]) - int(self.row[i])) < self.patch and abs(int(self.col[j]) - int(self.col[i])) < self.patch
                   for j in same)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1  # a fresh order next epoch even when nobody calls set_epoch
        queues = []
        for s in rng.permutation(np.unique(self.scene)):
            members = np.flatnonzero(self.scene == s)
            queues.append(list(rng.permutation(members)))
        # Deal round-robin: the stream alternates scenes while they last.
        stream: list[int] = []
        while any(queues):
            for q in queues:
                if q:
                    stream.append(int(q.pop()))
        pending = stream
        for _ in range(len(self)):
            batch: list[int] = []
            rest: list[int] = []
            for pos, i in enumerate(pending):
                if len(batch) == self.batch_size:
                    rest.extend(pending[pos:])
                    break
                (rest if self._overlaps(i, batch) else batch).append(i)
            # Too few non-overlapping windows left (the end of an epoch over few scenes): fill up
            # with the earliest waiting ones rather than dropping data.
            batch, rest = batch + rest[: self.batch_size - len(batch)], rest[self.batch_size - len(batch) :]
            yield batch
            pending = rest
