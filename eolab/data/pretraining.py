"""The unlabelled pre-training set of a run, by dataset name: scene tiles through the packed cache
(optionally a sampled subset), windows of a windowed source file (time series or co-registered sensor
pairs: ``slovenia``, ``ssl4eo_series``, ``s1s2``, built by ``eolab.data.series``), or a packed corpus
(``packed:<folder or URL>``, written by ``python -m eolab data pack`` and streamed by
``eolab.data.stream``).

What a run trains on and what a leakage check rebuilds from a run's record come from this one
function, so the two can never differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd
from torch.utils.data import Dataset

from .bands import S2_L2A
from .cache import PatchDataset, build_scene_cache
from .sampling import Pool, Selection, pool_reference, select
from .series import WINDOW_DATASETS, is_series, window_bands, window_dataset, window_spec
from .sources import source_bands
from .stream import PackedColumn, PackedDataset, open_corpus

DATASET_BANDS: dict[str, tuple[str, ...]] = {
    "scenes": S2_L2A,  # Major-TOM, Hydro, SSL4EO-S12 scenes through the packed cache
    # the windowed source files: s1s2 (Sentinel-2 + Sentinel-1 pairs), slovenia (NDVI series), ssl4eo_series
    **{name: window_bands(name) for name in WINDOW_DATASETS},
}
"""Pre-training datasets by name, with the bands each can provide."""
TIME_SERIES = tuple(name for name in WINDOW_DATASETS if is_series(window_spec(name)))
PACKED = "packed:"
"""Prefix of a packed corpus as a dataset value: ``packed:/path/to/corpus`` or ``packed:s3://bucket/corpus``."""


def is_packed(dataset: str) -> bool:
    return dataset.startswith(PACKED)


def dataset_bands(dataset: str, sources: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The bands a dataset can provide; a packed corpus's from its manifest (read now: an
    unreachable location raises ``ShardError`` naming it); scene tiles from ``sources``, the bands
    all of them have (their cards say which)."""
    if is_packed(dataset):
        return open_corpus(dataset.removeprefix(PACKED)).bands
    if dataset == "scenes" and sources:
        provided = [source_bands(s) for s in sources]
        return tuple(b for b in provided[0] if all(b in p for p in provided[1:]))
    return DATASET_BANDS.get(dataset, ())


class PretrainingParams(Protocol):
    """The run parameters that choose the pre-training set (``eolab.config.PretrainConfig`` has them)."""

    dataset: str
    source_list: tuple[str, ...]
    band_list: tuple[str, ...]
    img_size: int
    tile_stride: int
    num_dates: int
    n_pretrain: int
    sampling: str
    seed: int


@dataclass
class Sample:
    """Which patches a sampler chose (ids and manifest) and how representative they are of the pool."""

    selection: Selection
    representativeness: dict[str, float]


@dataclass
class PretrainingSet:
    dataset: Dataset
    tiles: pd.DataFrame | None  # window index (scene, row, col) when the data are scene tiles
    ids: list[str]  # one per sample, in order
    sources: list[str]  # one per sample
    sample: Sample | None  # the subset drawn by ``sampling`` when ``n_pretrain`` is set


def pretraining_set(params: PretrainingParams, root: Path) -> PretrainingSet:
    """The unlabelled pre-training set that ``params`` choose, read from the data root ``root``."""
    if is_packed(params.dataset):
        return packed_set(params)
    if params.dataset == "scenes":
        cache = build_scene_cache(root, params.source_list)
        tiles = cache.tiles(patch=params.img_size, stride=params.tile_stride, bands=params.band_list)
        sample = None
        if params.n_pretrain:
            pool = Pool(tiles, cache, patch=params.img_size)
            selection = select(params.sampling, pool, params.n_pretrain, seed=params.seed, param="sampling",
                               budget_param="n_pretrain")
            # How representative the draw is of everything it was drawn from, beside what it learns.
            sample = Sample(selection, pool_reference(pool, seed=params.seed).measure(selection.indices))
            tiles = tiles.iloc[selection.indices].reset_index(drop=True)
        dataset = PatchDataset(cache, tiles, patch=params.img_size, bands=params.band_list)
        return PretrainingSet(dataset, tiles, list(tiles["id"]), list(tiles["source"]), sample)
    # a windowed source file (eolab/data/sources/<dataset>.yaml): multi-date stacks or sensor pairs
    dataset = window_dataset(params.dataset, root, params.band_list, params.img_size, params.tile_stride,
                             num_dates=params.num_dates, seed=params.seed)
    if params.n_pretrain:
        raise ValueError(f"parameter 'n_pretrain' applies to dataset 'scenes' only, not {params.dataset!r}")
    ids = [dataset[i]["id"] for i in range(len(dataset))]
    return PretrainingSet(dataset, None, ids, [params.dataset] * len(dataset), None)


PACKED_SAMPLING = ("pandas_uniform", "uniform")
"""``sampling`` values a packed corpus takes with ``n_pretrain``: its subset is a seeded uniform draw
(the packer's ``--sampling`` chose the corpus's patches)."""


def packed_set(params: PretrainingParams) -> PretrainingSet:
    """A packed corpus: the packer's sampler already chose its patches; they stream shard by shard.
    ``n_pretrain`` > 0 trains on a uniform subset of it drawn by ``seed`` (``PackedCorpus.subset``)."""
    corpus = open_corpus(params.dataset.removeprefix(PACKED))
    if params.n_pretrain:
        if params.sampling not in PACKED_SAMPLING:
            raise ValueError(f"parameter 'sampling' = {params.sampling!r} on the packed corpus {corpus.location}: "
                             "n_pretrain draws a uniform subset of it ('uniform'); its packer's --sampling chose its patches")
        corpus = corpus.subset(params.n_pretrain, params.seed)  # > the corpus: an error naming both
    if corpus.manifest["patch"] != params.img_size:
        raise ValueError(f"parameter 'img_size' = {params.img_size} but the packed corpus {corpus.location} holds "
                         f"{corpus.manifest['patch']} px patches")
    dataset = PackedDataset(corpus, bands=params.band_list)
    return PretrainingSet(dataset, None, PackedColumn(corpus, "id"), PackedColumn(corpus, "source"), None)
