"""Encoders the benchmark can evaluate, what each one reads, and how it is applied to a task.

Every encoder declares its inputs: band names, unit, number of dates, image size (None: any),
whether it yields dense (per-patch) features. ``plan(task)`` compares them with the task's
declaration before anything is computed and returns either a ``Plan`` - which task bands it reads,
how dates and space are handled, and in words any adapter used - or ``NotApplicable`` with the
reason. Nothing is matched by channel position and no band is substituted.

Adapters, each reported in the result table's ``adapter`` column:
- a single-date encoder on a task with T > 1 steps embeds every step and averages the embeddings;
- a temporal encoder built for k dates on a dated task with more steps reads k of them (the
  clearest, spread over the series, when the task gives a clear fraction per date; else evenly spaced);
- an image encoder on a pixel time series (1 x 1 px) sees each pixel's spectrum broadcast to a
  constant image of its size (a declared stretch: the encoder was trained on textures it cannot see
  here; the band-statistics baseline shows what the spectrum alone gives);
- a dense encoder on a segmentation task tiles the scene (reflect-padded) in windows of its size,
  and each sampled pixel gets the patch features bilinearly upsampled to its position;
- a group-token encoder on a task lacking whole groups (e.g. Sentinel-1) encodes the other groups'
  tokens only.
Spatial sizes are otherwise never resampled (that would silently change the ground sampling distance).

Kinds: ``EolabEncoder`` (an eolab checkpoint or ViTEncoder + Normalization; ``random_init`` gives
the same architecture freshly initialised), ``FunctionEncoder`` (any callable images -> vectors, or
a torch module such as a timm or torchgeo model, with declared bands and unit) and ``BandStats``
(per-band mean and standard deviation, the baseline every embedding has to beat).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import load_encoder
from ..data.bands import BANDS as KNOWN_BANDS
from ..data.downstream import Task
from ..data.stats import Normalization
from ..data.taskdef import unit_mismatch
from ..data.timeseries import one_per_day, spread_pick
from ..models.tokenizers import GroupTokenizer, PatchTokenizer, TemporalTokenizer
from ..models.vit import SIZES, ViTEncoder, build_encoder, encoder_config
from .probe import embed

log = logging.getLogger(__name__)

WAVELENGTH_TOLERANCE_NM = 25.0
"""An encoder band reads the task band of nearest centre wavelength when they are at most this far
apart (Sentinel-2's closest neighbours, B08 and B8A, are 32 nm apart; Landsat OLI's bands lie within
10 nm of their Sentinel-2 counterparts)."""
MIN_DATE_CLEAR = 0.9  # a temporal encoder's dates are drawn among those at least this clear over the scene
BROADCAST_CELLS = 2  # a ViT reads a broadcast pixel through its central 2 x 2 patches (see probe.embed)


@dataclass(frozen=True)
class Plan:
    """How an encoder reads a task: the task bands it uses (in its own order) and the adapters."""

    bands: tuple[str, ...]
    unit: str
    dates: str  # "single" (T = 1) | "mean" (every step embedded, then pooled) | "select" (k of T steps)
    #             | "stats" / "series" (baselines: statistics over the steps, the series itself)
    spatial: str  # "as_is" | "broadcast" (pixel to image) | "tiles" (scene tiled, dense features)
    adapter: str = ""  # the adapters in words; empty when the encoder reads the task as it is
    encoder_bands: tuple[str, ...] = ()  # the encoder's name for each of ``bands`` (where matched by wavelength)
    conversions: tuple[UnitConversion, ...] = ()  # task bands converted to the encoder's unit before encoding

    @property
    def per_date(self) -> bool:
        """Every step is embedded on its own (a single-date encoder on a series): the per-date
        embeddings are pooled over time afterwards (``TEMPORAL_POOLINGS``)."""
        return self.dates == "mean"

    def adapter_with(self, temporal: str, steps: int) -> str:
        """``adapter`` with the temporal pooling of a per-date plan in words (``TEMPORAL_WORDS``)."""
        if not self.per_date or not temporal:
            return self.adapter
        marker = "steps embedded"
        return self.adapter.replace(marker, f"{marker}, {TEMPORAL_WORDS[temporal].format(t=steps)}", 1)

    @property
    def as_bands(self) -> tuple[str, ...]:
        """The encoder's band names for the channels it reads (``bands`` where no band was mapped)."""
        return self.encoder_bands or self.bands


@dataclass(frozen=True)
class NotApplicable:
    reason: str


@dataclass(frozen=True)
class UnitConversion:
    """One task band's values converted to the unit an encoder reads: ``affine`` (``x * scale +
    offset``, as a sensor card declares it), ``db_to_linear`` (``10 ** (x / 10)``: backscatter in
    decibels to linear power) or ``linear_to_db`` (``10 log10 x``, non-positive power as NaN)."""

    band: str
    source: str
    target: str
    kind: str = "affine"
    scale: float = 1.0
    offset: float = 0.0

    def apply(self, x: Tensor) -> Tensor:
        if self.kind == "db_to_linear":
            return torch.pow(10.0, x / 10)
        if self.kind == "linear_to_db":
            return 10 * torch.log10(x.clamp_min(torch.finfo(x.dtype).tiny))
        inverse = 1 / self.scale
        if abs(inverse - round(inverse)) < 1e-6 and round(inverse) != 0:  # exact in float32, as taskfile.scale_values
            x = x / float(round(inverse))
        elif self.scale != 1:
            x = x * self.scale
        return x + self.offset if self.offset else x

    def describe(self) -> str:
        if self.kind == "db_to_linear":
            how = "10^(x/10)"
        elif self.kind == "linear_to_db":
            how = "10 log10(x)"
        else:
            how = f"x * {self.scale:.6g}" + (f" {'-' if self.offset < 0 else '+'} {abs(self.offset):.6g}" if self.offset else "")
        return f"{self.source} -> {self.target} ({how})"


POWER_CONVERSIONS = {("dB", "linear"): "db_to_linear", ("linear", "dB"): "linear_to_db"}
"""Unit conversions that need no card: SAR backscatter between decibels and linear power."""


def unit_conversions(task: Task, band: str) -> dict[str, UnitConversion]:
    """The units a task band can be converted to: its card's (``Task.conversions``) and dB <-> linear."""
    i = task.bands.index(band)
    unit = task.units[i]
    out = {target: UnitConversion(band, unit, target, kind) for (source, target), kind in POWER_CONVERSIONS.items()
           if source == unit}
    for target, scale, offset in (task.conversions[i] if task.conversions else ()):
        out[target] = UnitConversion(band, unit, target, "affine", scale, offset)
    return out


def convert_units(image: Tensor, bands: tuple[str, ...], conversions: tuple[UnitConversion, ...]) -> Tensor:
    """(N, T, C, H, W) in ``bands`` order with the ``conversions``' bands converted (a new tensor)."""
    if not conversions:
        return image
    image = image.clone()
    for conv in conversions:
        if conv.band in bands:
            c = bands.index(conv.band)
            image[:, :, c] = conv.apply(image[:, :, c])
    return image


def conversions_text(conversions: tuple[UnitConversion, ...]) -> str:
    """The conversions in words, bands of the same conversion together (for the ``adapter`` column)."""
    groups: dict[str, list[str]] = {}
    for conv in conversions:
        groups.setdefault(conv.describe(), []).append(conv.band)
    return "; ".join(f"units {how} for {', '.join(bands)}" for how, bands in groups.items())


def band_wavelength(band) -> float | None:
    """Centre wavelength (nm) of a band given as an object with ``.wavelength_nm`` (``eolab.data.bands.Band``
    or a sensor card's band) or as a name eolab knows (Sentinel-2: exact names only, never re-spelled)."""
    if hasattr(band, "wavelength_nm"):
        return band.wavelength_nm
    known = KNOWN_BANDS.get(str(band))
    return None if known is None else known.wavelength_nm


def task_wavelengths(task: Task) -> tuple[float | None, ...]:
    """The task's declared centre wavelengths, else those of the Sentinel-2 bands it names (optical
    modalities only: a radar or climate channel has no wavelength)."""
    if task.wavelengths:
        return tuple(task.wavelengths)
    return tuple(band_wavelength(b) if m in ("s2", "") else None for b, m in zip(task.bands, task.modality, strict=True))


def match_bands(bands: tuple[str, ...], wavelengths: tuple[float | None, ...], task: Task,
                tolerance_nm: float = WAVELENGTH_TOLERANCE_NM) -> dict[str, tuple[str | None, str]]:
    """For each encoder band: the task band it reads and how it was found.

    By name where the names agree and the wavelengths (where both are known) agree within
    ``tolerance_nm``; else the task band of nearest centre wavelength within ``tolerance_nm``;
    else None (the band has no counterpart). A name alone never crosses sensors whose wavelengths
    disagree (e.g. Landsat B5, 865 nm, is not Sentinel-2 B05, 704 nm)."""
    task_wl = task_wavelengths(task)
    out = {}
    for band, wl in zip(bands, wavelengths, strict=True):
        if band in task.bands:
            twl = task_wl[task.bands.index(band)]
            if wl is None or twl is None or abs(wl - twl) <= tolerance_nm:
                out[band] = (band, "name")
                continue
        candidates = [(abs(wl - t), name) for name, t in zip(task.bands, task_wl, strict=True)
                      if wl is not None and t is not None]
        if candidates and min(candidates)[0] <= tolerance_nm:
            gap, name = min(candidates)
            out[band] = (name, f"{band}<-{name} ({gap:.0f} nm apart)")
        else:
            out[band] = (None, "")
    return out


class BenchEncoder:
    """Base class: declared inputs, applicability, and the shared date/space handling."""

    name: str
    bands: tuple[str, ...]
    unit: str
    num_dates: int = 1
    img_size: int | None = None
    dense: bool = False
    group_bands: tuple[tuple[str, ...], ...] = ()
    has_axes: bool = False  # pooling and depth are axes of this encoder (a ViT) or not
    depth: int = 0
    wavelength_tolerance_nm: float = WAVELENGTH_TOLERANCE_NM

    @property
    def band_wavelengths(self) -> tuple[float | None, ...]:
        """Centre wavelength of each of ``bands`` (None where unknown: matched by name only)."""
        declared = getattr(self, "_wavelengths", None)
        return tuple(declared) if declared else tuple(band_wavelength(b) for b in self.bands)

    def fingerprint(self) -> str:
        raise NotImplementedError

    def describe(self) -> dict:
        """Metadata stored with every embedding this encoder produces."""
        return {"encoder": self.name, "encoder_fingerprint": self.fingerprint(), "encoder_bands": list(self.bands),
                "encoder_unit": self.unit, "encoder_num_dates": self.num_dates, "encoder_img_size": self.img_size or 0}

    # -- applicability -------------------------------------------------------------------------

    def plan(self, task: Task) -> Plan | NotApplicable:
        match = match_bands(self.bands, self.band_wavelengths, task, self.wavelength_tolerance_nm)
        absent = [b for b in self.bands if match[b][0] is None]
        adapters = []
        mapped = [how for _, how in match.values() if how not in ("", "name")]
        if mapped:
            adapters.append("bands by wavelength: " + ", ".join(mapped))
        if absent:
            lost = [g for g in self.group_bands if set(g) & set(absent)]
            if not lost or any(not set(g) <= set(absent) for g in lost) or len(lost) == len(self.group_bands):
                return NotApplicable(f"{task.name} lacks bands {absent} that {self.name} reads, by name or by "
                                     f"wavelength within {self.wavelength_tolerance_nm:.0f} nm (task bands: {list(task.bands)})")
            adapters.append(f"no tokens for absent band groups {[list(g) for g in lost]}")
        bands = tuple(match[b][0] for b in self.bands if match[b][0] is not None)  # task names, encoder order
        encoder_bands = tuple(b for b in self.bands if match[b][0] is not None)
        conversions = self._unit_plan(task, bands)
        if isinstance(conversions, NotApplicable):
            return conversions
        converted = {c.band: c.target for c in conversions}
        unit = "+".join(dict.fromkeys(converted.get(b, task.units[task.bands.index(b)]) for b in bands))
        if unit != self.unit and not (absent and unit in self.unit.split("+")):
            return NotApplicable(f"{task.name} provides {list(bands)} in {unit!r}; {self.name} reads {self.unit!r}")
        if conversions:
            adapters.append(conversions_text(conversions))
        dates = self._date_plan(task)
        if isinstance(dates, NotApplicable):
            return dates
        spatial = self._spatial_plan(task)
        if isinstance(spatial, NotApplicable):
            return spatial
        adapters += [a for a in (dates[1], spatial[1]) if a]
        return Plan(bands, unit, dates[0], spatial[0], "; ".join(adapters),
                    encoder_bands if encoder_bands != bands else (), conversions)

    def _unit_plan(self, task: Task, bands: tuple[str, ...]) -> tuple[UnitConversion, ...] | NotApplicable:
        """The conversion of each task band whose unit is not one the encoder reads (its ``unit``,
        or a part of a combined unit such as 'reflectance+dB'), or why one is impossible."""
        wanted = self.unit.split("+") if self.unit else []
        out = []
        for band in bands:
            unit = task.units[task.bands.index(band)]
            if not wanted or unit in wanted:
                continue
            options = [c for target, c in unit_conversions(task, band).items() if target in wanted]
            if not options:
                return NotApplicable(f"{task.name} provides {band} in {unit!r}; {self.name} reads {self.unit!r}, and no "
                                     f"conversion from {unit!r} to {self.unit!r} is declared (a sensor card's scale "
                                     "and offset, or dB <-> linear)")
            out.append(options[0])
        return tuple(out)

    def _date_plan(self, task: Task) -> tuple[str, str] | NotApplicable:
        if self.num_dates > 1:
            if not task.dated:
                return NotApplicable(f"{self.name} reads series of {self.num_dates} dated images; the steps of "
                                     f"{task.name} carry no acquisition days")
            if task.num_dates < self.num_dates:
                return NotApplicable(f"{self.name} reads {self.num_dates} dates; {task.name} has {task.num_dates}")
            return "select", f"{self.num_dates} of {task.num_dates} dates" if task.num_dates > self.num_dates else ""
        if task.num_dates == 1:
            return "single", ""
        return "mean", f"each of {task.num_dates} steps embedded"  # pooled over steps as ``temporal_pooling`` says

    def _spatial_plan(self, task: Task) -> tuple[str, str] | NotApplicable:
        if task.kind == "segmentation":
            if not self.dense or not self.img_size:
                return NotApplicable(f"{self.name} yields one vector per image; the segmentation task {task.name} "
                                     "needs dense (per-patch) features")
            return "tiles", f"scene tiled in {self.img_size} px windows, patch features upsampled to pixels"
        if self.img_size is None or self.img_size == task.size:
            return "as_is", ""
        if task.size == 1:
            seen = f", read through its central {BROADCAST_CELLS}x{BROADCAST_CELLS} patches" if self.has_axes else ""
            return "broadcast", f"pixel values broadcast to a constant {self.img_size} px image{seen}"
        return NotApplicable(f"{self.name} reads {self.img_size} px images; {task.name} samples are {task.size} px "
                             "(not resampled: that would change the ground sampling distance)")

    # -- features ------------------------------------------------------------------------------

    def features(self, task: Task, batch: dict, plan: Plan, pool: str = "mean", block: int = -1,
                 drop: tuple[str, ...] = (), per_date: bool = False) -> np.ndarray:
        """Features (N, D) of every sample of ``batch``; the ``drop`` bands missing at test time
        (encoded without their token groups where they form whole groups, else replaced by their
        mean over the task, i.e. mean imputation). A ``plan.per_date`` plan embeds every step: the
        mean over steps, or with ``per_date`` the (N, T x D) embeddings of the steps in date order."""
        if drop:
            whole = [g for g in self.group_bands if set(g) <= set(drop)]
            if whole and {b for g in whole for b in g} >= set(drop) & set(plan.bands):
                keep = [i for i, b in enumerate(plan.bands) if b not in drop]
                plan = replace(plan, bands=tuple(plan.bands[i] for i in keep),
                               encoder_bands=tuple(plan.encoder_bands[i] for i in keep) if plan.encoder_bands else ())
            else:
                batch = impute(batch, drop)
        channels = [batch["bands"].index(b) for b in plan.bands]
        image = batch["image"][:, :, channels]  # (N, T, C', H, W) in the encoder's band order
        if plan.conversions:
            image = convert_units(image, plan.bands, plan.conversions)
            units = tuple(next((c.target for c in plan.conversions if c.band == b), "") for b in plan.bands)
            suspect = unit_mismatch(task.name, plan.bands, units, image, after=" after conversion")
            if suspect:
                log.warning("%s (%s)", suspect, conversions_text(plan.conversions))
        doy = batch.get("doy")
        if plan.dates == "select":
            steps = choose_dates(batch, self.num_dates)
            image, doy = image[:, steps], None if doy is None else np.asarray(doy)[:, steps]
        if plan.spatial == "tiles":
            x = self._dense_features(batch, image, plan, block, doy)  # (N, T', D)
        else:
            x = self._sample_features(image, plan, pool, block, doy)  # (N, T', D)
        return x.reshape(len(x), -1) if per_date and plan.per_date else pool_dates(x.reshape(len(x), -1), x.shape[1])

    def _sample_features(self, image: Tensor, plan: Plan, pool: str, block: int, doy) -> np.ndarray:
        """(N, T', D): one embedding per step (T' = 1 for a temporal encoder or a single date)."""
        size = self.img_size if plan.spatial == "broadcast" else None
        if plan.dates == "select":
            return self._encode(image, plan, pool, block, doy, size)[:, None]
        n, t = image.shape[:2]
        x = self._encode(image.flatten(0, 1), plan, pool, block, None, size)  # (N*T, D)
        return x.reshape(n, t, -1)  # (N*T, D) -> (N, T, D)

    def _dense_features(self, batch: dict, image: Tensor, plan: Plan, block: int, doy) -> np.ndarray:
        """Per-pixel features of a segmentation task's sampled pixels: scenes tiled into windows of
        the encoder's size, patch features upsampled bilinearly to pixels, gathered at each sample
        (pooling does not apply: every pixel reads the patch tokens around it)."""
        s, t, c, h, w = image.shape
        win = self.img_size
        ph, pw = -h % win, -w % win
        steps = 1 if plan.dates == "select" else t  # a temporal encoder reads the dates together
        padded = F.pad(image.flatten(0, 1), (0, pw, 0, ph), mode="reflect")  # (S*T, C, Hp, Wp)
        hp, wp = padded.shape[-2:]
        tiles = padded.unfold(-2, win, win).unfold(-2, win, win)  # (S*T, C, nh, nw, win, win)
        nh, nw = tiles.shape[2:4]
        tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, win, win)  # (S*T*nh*nw, C, win, win)
        if plan.dates == "select":
            tiles = tiles.reshape(s, t, nh * nw, c, win, win).transpose(1, 2).reshape(-1, t, c, win, win)
            doy = None if doy is None else np.repeat(np.asarray(doy)[:1], len(tiles), 0)  # one scene-wide set of dates
        maps = self._encode_dense(tiles, plan, block, doy)  # (M, D, g, g)
        maps = F.interpolate(torch.from_numpy(maps), size=(win, win), mode="bilinear", align_corners=False)
        d = maps.shape[1]
        grid = maps.reshape(s, steps, nh, nw, d, win, win).permute(0, 1, 4, 2, 5, 3, 6)  # (S, T', D, nh, win, nw, win)
        grid = grid.reshape(s, steps, d, hp, wp)
        scene, row, col = (torch.as_tensor(a) for a in np.asarray(batch["pixel"]).T)
        return grid[scene, :, :, row, col].numpy()  # (N, T', D)

    def _encode(self, images: Tensor, plan: Plan, pool: str, block: int, doy, size: int | None) -> np.ndarray:
        """(B, C, H, W) or (B, T, C, H, W) in ``plan.bands`` order -> (B, D)."""
        raise NotImplementedError

    def _encode_dense(self, images: Tensor, plan: Plan, block: int, doy) -> np.ndarray:
        """Windows (B, [T,] C, s, s) -> patch feature maps (B, D, g, g)."""
        raise NotImplementedError


TEMPORAL_POOLINGS = ("mean", "concat", "probe")
"""How a single-date encoder's per-date embeddings of a series become features: their mean, their
concatenation in date order (T x D), or (``probe``) the concatenation read by a small attention
probe learned on each fold's training part (``protocols.TemporalProbe``)."""
TEMPORAL_WORDS = {"mean": "mean over steps", "concat": "concatenated in date order ({t} x D)",
                  "probe": "attention over steps learned on each fold's training part"}


def pool_dates(x: np.ndarray, steps: int, how: str = "mean") -> np.ndarray:
    """(N, T x D) per-date embeddings in date order -> (N, D) mean, or (N, T x D) as they are
    (``concat``, and ``probe``, whose model reads the dates itself)."""
    if how == "mean":
        return x.reshape(len(x), steps, -1).mean(1)  # (N, T*D) -> (N, T, D) -> (N, D)
    if how in ("concat", "probe"):
        return x
    raise ValueError(f"unknown temporal pooling {how!r}; choose from {TEMPORAL_POOLINGS}")


def impute(batch: dict, bands: tuple[str, ...]) -> dict:
    """``batch`` with the ``bands`` channels replaced by their mean over the whole task (every
    sample, step and pixel): a band missing at test time, filled with the least informative value."""
    image = batch["image"].clone()
    for b in bands:
        if b in batch["bands"]:
            i = batch["bands"].index(b)
            image[:, :, i] = image[:, :, i].mean()
    return {**batch, "image": image}


def choose_dates(batch: dict, k: int) -> np.ndarray:
    """Indices of ``k`` of a task's steps, the same for every sample: spread over the clearest dates
    (one per day) when the task gives each date's clear fraction, else evenly spaced."""
    t = batch["image"].shape[1]
    clear = batch.get("date_clear")
    if clear is not None:
        candidates = np.flatnonzero(np.asarray(clear) >= MIN_DATE_CLEAR)
        candidates = one_per_day(candidates, tuple(d[:10] for d in batch["dates"]), np.asarray(clear))
        if len(candidates) >= k:
            return spread_pick(candidates, k, np.random.default_rng(0))
    return np.unique(np.linspace(0, t - 1, k).round().astype(int))


# ----------------------------------------------------------------------------------------------
# eolab ViT encoders


def _sha1_state(module: nn.Module) -> str:
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in module.state_dict().items()}, buf)
    return hashlib.sha1(buf.getvalue()).hexdigest()


class EolabEncoder(BenchEncoder):
    """An eolab ``ViTEncoder`` with the ``Normalization`` it was trained with."""

    has_axes = True

    def __init__(self, encoder: ViTEncoder, normalization: Normalization, name: str = "eolab",
                 config: dict | None = None, checkpoint: str | Path | None = None, fingerprint: str | None = None,
                 batch_size: int = 256):
        self.encoder = encoder.eval()
        self.normalization = normalization
        self.name, self.config, self.batch_size = name, config or {}, batch_size
        self.checkpoint = str(checkpoint) if checkpoint else ""
        tok = encoder.tokenizer
        self.bands = tuple(normalization.bands)
        if tuple(tok.bands) != self.bands:
            raise ValueError(f"{name}: normalisation bands {self.bands} differ from the encoder's {tuple(tok.bands)}")
        self.unit = normalization.unit
        self.num_dates = getattr(tok, "num_dates", 1)
        self.img_size, self.dense, self.depth = tok.img_size, True, len(encoder.blocks)
        self.group_bands = tuple(getattr(tok, "group_bands", ()))
        self._fingerprint = fingerprint

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str | None = None) -> EolabEncoder:
        """Load a checkpoint (weights only; a corrupt or foreign file raises CheckpointError naming it)."""
        path = Path(path)
        encoder, normalization, config = load_encoder(path)
        sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
        default = path.parent.name if path.stem == "encoder" else path.stem
        return cls(encoder, normalization, name or default, config, path, fingerprint=sha1)

    def random_init(self, seed: int = 0, name: str = "random_init") -> EolabEncoder:
        """The same architecture and normalisation, freshly initialised with ``seed`` (the control
        that shows what pre-training adds over the architecture and the inputs alone)."""
        cfg = self.config or _config_of(self.encoder)
        torch.manual_seed(seed)
        encoder = build_encoder(cfg["size"], tuple(cfg["bands"]), cfg["img_size"], cfg["patch_size"],
                                cfg.get("tokenizer", "patch"), tuple(tuple(g) for g in cfg.get("groups", ())),
                                cfg.get("num_dates", 1))
        fp = hashlib.sha1(json.dumps(["random_init", cfg, seed, self.normalization.to_dict()], sort_keys=True).encode())
        return EolabEncoder(encoder, self.normalization, name, cfg, fingerprint=fp.hexdigest())

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha1((_sha1_state(self.encoder) + json.dumps(
                self.normalization.to_dict(), sort_keys=True)).encode()).hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        return {**super().describe(), "checkpoint": self.checkpoint, "config": json.dumps(self.config),
                "normalization_corpus": self.normalization.corpus}

    def _data(self, images: Tensor, plan: Plan, doy) -> dict:
        return {"image": images, "bands": plan.as_bands, "unit": plan.unit, "doy": doy}

    def _encode(self, images, plan, pool, block, doy, size):
        cells = min(BROADCAST_CELLS, self.encoder.tokenizer.grid) if size else 0
        return embed(self.encoder, self.normalization, self._data(images, plan, doy), pool=pool,
                     batch_size=self.batch_size, where=f"{self.name} inputs", block=block, size=size, cells=cells)

    def _encode_dense(self, images, plan, block, doy):
        tokens = embed(self.encoder, self.normalization, self._data(images, plan, doy), pool="tokens",
                       batch_size=self.batch_size, where=f"{self.name} inputs", block=block)  # (B, K, D)
        g = self.encoder.tokenizer.grid
        b, _, d = tokens.shape
        # Tokens are group- (or date-) major: (B, G*g*g, D) -> (B, G, g*g, D), averaged over groups/dates.
        cells = tokens.reshape(b, -1, g * g, d).mean(1)
        return cells.reshape(b, g, g, d).transpose(0, 3, 1, 2)  # (B, D, g, g)


def _config_of(encoder: ViTEncoder) -> dict:
    """The ``encoder_config`` of an in-memory encoder (its size looked up by width, depth and heads)."""
    tok, dim, depth = encoder.tokenizer, encoder.dim, len(encoder.blocks)
    heads = encoder.blocks[0].attn.num_heads
    sizes = [n for n, c in SIZES.items() if (c.dim, c.depth, c.heads) == (dim, depth, heads)]
    if not sizes:
        raise ValueError(f"no model size has dim {dim}, depth {depth}, heads {heads}; pass config= to EolabEncoder")
    kind = {PatchTokenizer: "patch", GroupTokenizer: "groups", TemporalTokenizer: "temporal"}[type(tok)]
    return encoder_config(sizes[0], tok.bands, tok.img_size, tok.patch_size, kind,
                          getattr(tok, "group_bands", ()), getattr(tok, "num_dates", 1))


# ----------------------------------------------------------------------------------------------
# Any callable or torch module


class FunctionEncoder(BenchEncoder):
    """A plain function (or a torch module: timm, torchgeo, ...) from images to vectors.

    ``fn`` receives float tensors (B, C, H, W) - (B, T, C, H, W) when ``num_dates`` > 1 - holding
    the declared ``bands`` in that order (names, or objects with ``.name`` and ``.wavelength_nm``:
    a task band of another name within the tolerance of a wavelength is read for it), in the declared ``unit``, unnormalised (normalise inside
    ``fn`` as the model expects), and returns (B, D). ``img_size`` None: any image size. Give a
    ``fingerprint`` that changes when the function does, so cached embeddings are not reused
    wrongly (a module's weights are hashed when none is given).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor | np.ndarray], bands, unit: str, name: str = "function",
                 num_dates: int = 1, img_size: int | None = None, fingerprint: str | None = None, batch_size: int = 256):
        bands = tuple(bands)  # names, or objects with .name and .wavelength_nm (a Band, a sensor card's band)
        self._wavelengths = tuple(band_wavelength(b) for b in bands) if any(hasattr(b, "name") for b in bands) else ()
        self.fn, self.bands, self.unit, self.name = fn, tuple(getattr(b, "name", b) for b in bands), unit, name
        self.num_dates, self.img_size, self.batch_size = num_dates, img_size, batch_size
        self._fingerprint = fingerprint

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            what = _sha1_state(self.fn) if isinstance(self.fn, nn.Module) else _function_identity(self.fn)
            self._fingerprint = hashlib.sha1(json.dumps([self.name, self.bands, self.unit, self.num_dates,
                                                         self.img_size, what]).encode()).hexdigest()
        return self._fingerprint

    @torch.no_grad()
    def _encode(self, images, plan, pool, block, doy, size):
        if isinstance(self.fn, nn.Module):
            self.fn.eval()
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i : i + self.batch_size]
            if size is not None:
                chunk = chunk.expand(*chunk.shape[:-2], size, size)  # a pixel broadcast to an image
            y = self.fn(chunk)
            out.append(np.asarray(y.detach().float().cpu() if isinstance(y, Tensor) else y, dtype=np.float32))
        return np.concatenate(out)


def _function_identity(fn) -> str:
    """A plain function's name and source, and the torch modules it closes over (their weights): an
    edited function, or one over other weights, is a different encoder for the cache."""
    import inspect

    parts = [f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"]
    try:
        parts.append(hashlib.sha1(inspect.getsource(fn).encode()).hexdigest())
    except (OSError, TypeError):  # no source (a builtin, an interactive definition): the name alone
        pass
    for cell in getattr(fn, "__closure__", None) or ():
        value = cell.cell_contents
        if isinstance(value, nn.Module):
            parts.append(_sha1_state(value))
    return ":".join(parts)


# ----------------------------------------------------------------------------------------------
# Band statistics baseline


class BandStats(BenchEncoder):
    """Per-band mean and standard deviation over a sample's steps and pixels (2 x bands features).

    With ``bands`` given (an encoder's bands, for a fair comparison), only those the task has are
    used; with none of them in the task, or ``bands`` None, all task bands. A segmentation sample
    (a pixel) gets its own values plus the mean and standard deviation of a 9 x 9 px neighbourhood,
    averaged over its clear dates (3 x bands features).
    """

    name = "band_stats"

    def __init__(self, bands: tuple[str, ...] | None = None, name: str = "band_stats"):
        self.restrict = tuple(bands) if bands else None
        self.bands, self.unit, self.name = self.restrict or (), "", name

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(["band_stats-v1", self.restrict]).encode()).hexdigest()

    def plan(self, task: Task) -> Plan:
        # In the encoder's band order where restricted (the same features whatever order a task stores them in)
        bands = tuple(b for b in (self.restrict or task.bands) if b in task.bands)
        note = f"the encoder's {len(bands)} bands" if bands and self.restrict else f"all {len(task.bands)} task bands"
        return Plan(bands or task.bands, "", "stats", "as_is", note)  # statistics over steps and pixels

    def features(self, task, batch, plan, pool="mean", block=-1, drop=()):
        if drop:
            batch = impute(batch, drop)
        channels = [batch["bands"].index(b) for b in plan.bands]
        image = batch["image"][:, :, channels].double()  # (N, T, C, H, W)
        if task.kind == "segmentation":
            return _pixel_stats(image, batch).numpy()
        x = image.transpose(1, 2).flatten(2)  # (N, C, T*H*W)
        return torch.cat([x.mean(-1), x.std(-1, correction=0)], 1).float().numpy()  # (N, 2C)


def _pixel_stats(image: Tensor, batch: dict, k: int = 9) -> Tensor:
    """Per sampled pixel: value, k x k neighbourhood mean and std, averaged over clear dates: (N, 3C)."""
    s, t, c, h, w = image.shape
    x = image.flatten(0, 1)  # (S*T, C, H, W)
    mean = F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)
    sq = F.avg_pool2d(x * x, k, 1, k // 2, count_include_pad=False)
    stats = torch.cat([x, mean, (sq - mean * mean).clamp_min(0).sqrt()], 1).reshape(s, t, 3 * c, h, w)
    valid = batch.get("valid")
    weight = torch.ones(s, t, h, w, dtype=stats.dtype) if valid is None else torch.as_tensor(valid).to(stats.dtype)
    scene, row, col = (torch.as_tensor(a) for a in np.asarray(batch["pixel"]).T)
    per_date = stats[scene, :, :, row, col]  # (N, T, 3C)
    wt = weight[scene, :, row, col][..., None]  # (N, T, 1)
    return ((per_date * wt).sum(1) / wt.sum(1).clamp_min(1)).float()


# ----------------------------------------------------------------------------------------------
# Temporal baselines: what a series gives without any learned encoder


def _series(task: Task, batch: dict, bands: tuple[str, ...]) -> Tensor:
    """(N, T, C) float64: every sample's series of the ``bands``, the spatial mean of each step (a
    segmentation sample: its own pixel's values)."""
    channels = [batch["bands"].index(b) for b in bands]
    image = batch["image"][:, :, channels].double()  # (N, T, C, H, W)
    if task.kind == "segmentation":
        scene, row, col = (torch.as_tensor(a) for a in np.asarray(batch["pixel"]).T)
        return image[scene, :, :, row, col]  # (N, T, C)
    return image.mean((-2, -1))


class _SeriesBaseline(BenchEncoder):
    """Shared applicability of the temporal baselines: a task with more than one step, its bands
    restricted to an encoder's as ``BandStats`` does."""

    version = ""

    def __init__(self, bands: tuple[str, ...] | None = None, name: str | None = None):
        self.restrict = tuple(bands) if bands else None
        self.bands, self.unit = self.restrict or (), ""
        self.name = name or self.name

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps([self.version, self.restrict]).encode()).hexdigest()

    def plan(self, task: Task) -> Plan | NotApplicable:
        if task.num_dates < 2:
            return NotApplicable(f"{self.name} summarises time series; {task.name} has {task.num_dates} step")
        bands = tuple(b for b in (self.restrict or task.bands) if b in task.bands) or task.bands
        note = f"the encoder's {len(bands)} bands" if self.restrict and bands != task.bands else f"all {len(bands)} task bands"
        return Plan(bands, "", "series", "as_is", note)


class FlatSeries(_SeriesBaseline):
    """The flattened series: every step's value of every band, (N, T x C) features (a linear probe on
    it is the plain temporal baseline of crop-type benchmarks)."""

    name, version = "flat_series", "flat_series-v1"

    def features(self, task, batch, plan, pool="mean", block=-1, drop=()):
        batch = impute(batch, drop) if drop else batch
        return _series(task, batch, plan.bands).flatten(1).float().numpy()  # (N, T, C) -> (N, T*C)


class SeriesSummary(_SeriesBaseline):
    """Per band: the 10/25/50/75/90th percentiles over the steps and a two-harmonic fit over the
    year (mean, and cosine and sine amplitudes of the annual and half-year cycles, by day of year
    where the task is dated, else by step): (N, 10 x C) features whatever the series length."""

    name, version = "series_summary", "series_summary-v1"
    PERCENTILES = (10, 25, 50, 75, 90)

    def features(self, task, batch, plan, pool="mean", block=-1, drop=()):
        batch = impute(batch, drop) if drop else batch
        x = _series(task, batch, plan.bands)  # (N, T, C)
        n, t, c = x.shape
        q = torch.quantile(x, torch.tensor(self.PERCENTILES, dtype=x.dtype) / 100, dim=1)  # (5, N, C)
        doy = batch.get("doy")
        phase = (torch.as_tensor(np.asarray(doy), dtype=x.dtype) / 365.25 if doy is not None and task.dated
                 else torch.arange(t, dtype=x.dtype).expand(n, t) / t) * 2 * np.pi  # (N, T) radians
        design = torch.stack([torch.ones_like(phase), phase.cos(), phase.sin(), (2 * phase).cos(), (2 * phase).sin()], -1)
        coef = torch.linalg.lstsq(design, x).solution  # (N, 5, C): least squares per sample and band
        return torch.cat([q.permute(1, 0, 2).reshape(n, -1), coef.reshape(n, -1)], 1).float().numpy()
