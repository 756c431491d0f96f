"""How training batches are drawn from the pre-training patches.

``SceneDiverseBatchSampler`` fills each batch from as many scenes as possible and never puts two
overlapping windows of one scene in the same batch. Contrastive objectives use the other samples of
a batch as negatives: windows that overlap (tiles at stride 32 of 64-pixel patches overlap by half)
or a batch filled from one scene make near-duplicate negatives, which the loss then pushes apart
(the failure torchgeo #3548 describes). Plain shuffling allows both. ``SeededBatchSampler`` is the
plain seeded shuffle for data without a scene/window index.

Both are resumable and distributed-aware, which Lightning's default sampling is not for a run
killed mid-epoch: each epoch's batch order is a pure function of (seed, epoch), ``skip(k)`` drops
the first k batches of the next epoch iterated (a resumed run continues with exactly the batches
the killed one had not seen), and under ``torch.distributed`` each rank takes its contiguous share
of every global batch, so N processes see the same global batches as one.

``BalancedBatchSampler`` keeps the scene mix of every batch the same for the whole epoch: each scene
has its share of every batch (in proportion to its number of windows, or to the square root of it),
where the round-robin deal of ``SceneDiverseBatchSampler`` runs out of the small scenes first and
ends every epoch on the largest ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np
import pandas as pd
from torch.utils.data import Sampler


class _EpochBatches(Sampler[list[int]]):
    """Batches as a function of (seed, epoch), with resume (``skip``) and per-rank shares."""

    def __init__(self, num_batches: int, batch_size: int, seed: int):
        self.num_batches, self.batch_size, self.seed, self.epoch, self._skip = num_batches, batch_size, seed, 0, 0

    def __len__(self) -> int:
        # The full epoch even while skipping: Lightning restores how many batches of the epoch are
        # done and counts on from there; the iterator just does not repeat them.
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, batches: int) -> None:
        """Drop the first ``batches`` batches of the next epoch iterated (resuming mid-epoch)."""
        self._skip = batches

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches(self.epoch)[self._skip :]
        self._skip = 0
        self.epoch += 1  # a fresh order next epoch even when nobody calls set_epoch
        rank, world = _rank_world()
        if self.batch_size % world:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by the {world} processes")
        share = self.batch_size // world
        for batch in batches:
            yield batch[rank * share : (rank + 1) * share]  # this rank's part of the global batch


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class SeededBatchSampler(_EpochBatches):
    """A seeded random permutation per epoch, cut into full batches (the last partial one dropped)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0):
        super().__init__(num_samples // batch_size, batch_size, seed)
        self.num_samples = num_samples

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        return [order[i * self.batch_size : (i + 1) * self.batch_size].tolist() for i in range(self.num_batches)]


class SceneDiverseBatchSampler(_EpochBatches):
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
        super().__init__(len(tiles) // batch_size, batch_size, seed)
        self.scene = tiles["scene"].to_numpy()
        self.row, self.col = tiles["row"].to_numpy(), tiles["col"].to_numpy()
        self.patch = patch

    def _overlaps(self, i: int, batch: list[int]) -> bool:
        same = [j for j in batch if self.scene[j] == self.scene[i]]
        return any(abs(int(self.row[j]) - int(self.row[i])) < self.patch and abs(int(self.col[j]) - int(self.col[i])) < self.patch
                   for j in same)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
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
        pending, batches = stream, []
        for _ in range(self.num_batches):
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
            batches.append(batch)
            pending = rest
        return batches


BALANCE_WEIGHTINGS = ("proportional", "sqrt")


class BalancedBatchSampler(_EpochBatches):
    """Batches of ``batch_size`` indices into ``tiles`` (rows: scene, row, col) in which every scene
    has its share, in every batch of the epoch: in proportion to its number of windows
    (``weighting="proportional"``) or to the square root of it (``"sqrt"``, which gives small scenes
    more than their size and large ones less).

    Shares are whole windows: each batch holds each scene's share rounded down or up, and the
    scenes furthest behind their running target get the rounded-up ones, so that a scene's running
    count stays within one window of its target throughout the epoch. Within a scene windows come in a seeded random order; one
    that overlaps a window of the same scene already in the batch (less than ``patch`` pixels apart
    in both axes) waits for the next batch. Only when a scene has no non-overlapping window left for
    its share does an overlapping one fill it; ``overlap_fills`` counts those of the last epoch
    built (0 on ordinary data).

    An epoch has ``len(tiles) // batch_size`` batches, as with shuffling. Proportionally, every
    window is seen once per epoch (give or take one per scene, from rounding); with square-root
    shares a small scene's windows are repeated within an epoch (a new random order each pass) and a
    large scene's are only partly seen. Deterministic in (``seed``, epoch); ``skip``/``set_epoch``
    resume exactly, as with the other samplers.
    """

    def __init__(self, tiles: pd.DataFrame, batch_size: int, patch: int = 64, seed: int = 0,
                 weighting: str = "proportional"):
        missing = [c for c in ("scene", "row", "col") if c not in tiles.columns]
        if missing:
            raise ValueError(f"tiles lack columns {missing} needed for balanced batches")
        if weighting not in BALANCE_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {BALANCE_WEIGHTINGS}, got {weighting!r}")
        if len(tiles) < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the {len(tiles)} windows to draw from")
        super().__init__(len(tiles) // batch_size, batch_size, seed)
        self.scene = tiles["scene"].to_numpy()
        self.row, self.col = tiles["row"].to_numpy().astype(np.int64), tiles["col"].to_numpy().astype(np.int64)
        self.patch, self.weighting = patch, weighting
        self.scenes, sizes = np.unique(self.scene, return_counts=True)
        weight = sizes.astype(np.float64) if weighting == "proportional" else np.sqrt(sizes)
        self.shares = weight / weight.sum()  # (S,) each scene's fraction of every batch
        self.members = [np.flatnonzero(self.scene == s) for s in self.scenes]
        self.overlap_fills = 0

    def quotas(self) -> np.ndarray:
        """(num_batches, S) windows of each scene in each batch: every row sums to ``batch_size``,
        each scene gets its share per batch rounded down or up, and the windows left after rounding
        down go to the scenes furthest behind their running target, so no scene drifts from it."""
        per_batch = self.batch_size * self.shares  # (S,) fractional windows per batch
        base = np.floor(per_batch).astype(np.int64)
        extra = self.batch_size - int(base.sum())  # windows left after rounding every share down
        out = np.zeros((self.num_batches, len(self.shares)), dtype=np.int64)
        given = np.zeros(len(self.shares), dtype=np.int64)
        for k in range(self.num_batches):
            behind = (k + 1) * per_batch - (given + base)  # (S,) how far each scene would trail its target
            count = base.copy()
            count[np.argsort(-behind, kind="stable")[:extra]] += 1
            out[k], given = count, given + count
        return out

    def _overlaps(self, i: int, chosen: list[int]) -> bool:
        return any(abs(self.row[j] - self.row[i]) < self.patch and abs(self.col[j] - self.col[i]) < self.patch
                   for j in chosen)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        queues = [deque(rng.permutation(m).tolist()) for m in self.members]
        self.overlap_fills = 0
        batches = []
        for quota in self.quotas():
            batch: list[int] = []
            for s, need in enumerate(quota):
                chosen, waiting, refilled = [], [], False
                while len(chosen) < need:
                    if not queues[s]:
                        if refilled and waiting:
                            # even a new pass offers no window clear of the chosen: overlap
                            chosen.append(waiting.pop(0))
                            self.overlap_fills += 1
                            continue
                        queues[s].extend(rng.permutation(self.members[s]).tolist())  # a new pass over the scene
                        refilled = True
                    i = queues[s].popleft()
                    (waiting if self._overlaps(i, chosen) else chosen).append(i)
                queues[s].extendleft(reversed(waiting))  # they come first in the next batch
                batch.extend(chosen)
            # mixed within the batch, so that every rank's share of it mixes scenes too
            batches.append([int(i) for i in rng.permutation(batch)])
        return batches
