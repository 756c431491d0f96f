"""Other people's encoders for the benchmark: torchgeo's pre-trained weights, timm models,
precomputed embedding products, and a random-init twin of any torch module.

    torchgeo_encoder("ResNet18_Weights.SENTINEL2_ALL_MOCO")            # downloads through torchgeo
    torchgeo_encoder("ResNet18_Weights.SENTINEL2_ALL_MOCO", weights_file="moco.pth")   # offline
    torchgeo_encoder("ResNet18_Weights.SENTINEL2_ALL_MOCO", weights_file="random")     # architecture only
    dofa_encoder("DOFABase16_Weights.DOFA_MAE", weights_file="random")  # any band with a wavelength
    timm_encoder("resnet18", bands=card_bands("sentinel2_l1c"), unit="reflectance")
    EmbeddingsEncoder("major_tom_embeddings.parquet", tolerance_m=50)
    random_twin(encoder, seed=0)

Every adapter declares what it reads - band names (Sentinel-2 and Sentinel-1 card names, with their
wavelengths), unit, normalisation, image size - so ``BenchEncoder.plan`` decides applicability
from declarations, as for eolab's own encoders. A torchgeo weights' band order and normalisation
come from the weights' own ``meta["bands"]`` and ``transforms`` (its ``Normalize`` steps composed
into one per-band affine map); only what the metadata cannot say is declared here: which values its
transforms read (``STORED_VALUES``: SSL4EO-S12 stores Sentinel-2 as reflectance x 10000 and
Sentinel-1 in dB). The transforms' ``Resize``/``CenterCrop`` are not applied: sizes are never
resampled (that would change the ground sampling distance); a CNN reads any size, a ViT its
declared ``img_size`` (its position embeddings resampled to that grid when loaded). DOFA is
wavelength-conditioned: it reads every task band with a centre wavelength, given those wavelengths,
at the task's own size (its position embeddings interpolated to each task's grid).

Features are the pooled features before the classification head (timm's ``num_classes=0``).
``spec_encoder`` turns a command-line spec or an encoder YAML file into an encoder (see
docs/benchmark.md, "Other people's encoders").
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data.bands import Band, card_bands
from ..data.cards import CardError, load_card
from ..data.downstream import Task
from .encoders import BenchEncoder, FunctionEncoder, NotApplicable, Plan, task_wavelengths

STORED_VALUES: dict[tuple[str, str], tuple[str, float]] = {
    # (pre-training data set in the weights' meta, sensor) -> (eolab unit, factor from that unit to the
    # values the weights' transforms read). SSL4EO-S12, SSL4Eco and CrisisLandMark keep Sentinel-2 as
    # digital numbers (reflectance x 10000: their Normalize divides by 10000) and Sentinel-1 in dB.
    ("SSL4EO-S12", "sentinel2"): ("reflectance", 10000.0),
    ("SSL4Eco Dataset", "sentinel2"): ("reflectance", 10000.0),
    ("CrisisLandMark", "sentinel2"): ("reflectance", 10000.0),
    ("SSL4EO-S12", "sentinel1"): ("dB", 1.0),
}
"""Weights not listed (SatlasPretrain's 8-bit true-colour inputs, SeCo's, the Landsat ones) need
``unit=`` and ``input_scale=`` from the caller: eolab does not guess what they were fed."""
SENSOR_CARDS = {"sentinel2": "sentinel2_l1c", "sentinel1": "sentinel1_grd"}
"""The card each weights' band names are resolved in (Sentinel-2: L1C, which has all 13 bands)."""


class AdapterError(ValueError):
    """An adapter that cannot be built as asked; the message names the weights, model, file or spec."""


# ----------------------------------------------------------------------------------------------
# A torch module with declared inputs


class Normalised(nn.Module):
    """``module((x * scale - mean) / std)``: the declared normalisation as buffers, so that an
    encoder's fingerprint (its state) changes with it, and a random twin keeps it."""

    def __init__(self, module: nn.Module, mean, std, scale: float = 1.0, call=None):
        super().__init__()
        self.module, self.scale, self.call = module, float(scale), call
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = (x * self.scale - self.mean) / self.std  # (B, C, H, W), mean/std (1, C or 1, 1, 1)
        return self.call(self.module, x) if self.call else self.module(x)


class ModuleEncoder(FunctionEncoder):
    """A torch module from images (B, C, H, W) in the declared ``bands``/``unit`` to pooled features
    (B, D), normalised as declared. ``source`` says where the weights came from (a URL, a file,
    "random"); ``native_size`` is the size the weights were trained at (recorded, never resampled to)."""

    def __init__(self, module: nn.Module, bands, unit: str, mean, std, scale: float = 1.0, name: str = "module",
                 img_size: int | None = None, native_size: int | None = None, source: str = "", call=None,
                 batch_size: int = 64, fingerprint: str | None = None):
        bands = tuple(bands)
        for what, v in (("mean", mean), ("std", std)):
            if np.ndim(v) and len(v) not in (1, len(bands)):
                raise AdapterError(f"{name}: {what} has {len(v)} values for {len(bands)} bands")
        if np.any(np.asarray(std, dtype=float) == 0):
            raise AdapterError(f"{name}: std has a zero")
        super().__init__(Normalised(module, mean, std, scale, call), bands, unit, name=name, img_size=img_size,
                         batch_size=batch_size, fingerprint=fingerprint)
        self.source, self.native_size = source, native_size
        self.twin_note = ""

    @property
    def module(self) -> nn.Module:
        return self.fn.module

    def normalisation(self) -> dict:
        n = self.fn
        return {"scale": n.scale, "mean": n.mean.flatten().tolist(), "std": n.std.flatten().tolist()}

    def describe(self) -> dict:
        return {**super().describe(), "source": self.source, "native_size": self.native_size or 0,
                "normalisation": json.dumps(self.normalisation()), "twin": self.twin_note}

    def plan(self, task: Task) -> Plan | NotApplicable:
        plan = super().plan(task)
        if isinstance(plan, Plan) and self.native_size and self.img_size is None and task.size != self.native_size:
            # a CNN reads any size; say that it reads other than what it was trained at
            note = f"read at {task.size} px (trained at {self.native_size} px; not resampled)"
            plan = Plan(plan.bands, plan.unit, plan.dates, plan.spatial, "; ".join(a for a in (plan.adapter, note) if a),
                        plan.encoder_bands)
        return plan


def _head_tolerant_load(model: nn.Module, state: dict, where: str) -> None:
    """Load ``state`` into a model built without its classification head: only head keys may be
    unexpected, nothing may be missing; an absolute position embedding is resampled to the
    model's grid (a ViT read at another size than it was trained at)."""
    if not isinstance(state, dict):
        raise AdapterError(f"{where}: expected a state dict, found {type(state).__name__}")
    for key in ("state_dict", "model"):  # a training checkpoint holding the weights under a key
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    own = model.state_dict()
    pos = own.get("pos_embed")
    if pos is not None and "pos_embed" in state and state["pos_embed"].shape != pos.shape:
        from timm.layers import resample_abs_pos_embed

        prefix = getattr(model, "num_prefix_tokens", 1)
        grid = int(round((pos.shape[1] - prefix) ** 0.5))
        state = {**state, "pos_embed": resample_abs_pos_embed(state["pos_embed"], [grid, grid], num_prefix_tokens=prefix)}
    shapes = [f"{k}: file {tuple(v.shape)}, model {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    if shapes:
        raise AdapterError(f"{where}: weights do not fit the architecture ({'; '.join(shapes[:3])})")
    missing, unexpected = model.load_state_dict(state, strict=False)
    head = tuple(h for h in {getattr(model, "pretrained_cfg", {}).get("classifier", "head"), "head", "fc"} if h)
    unexpected = [k for k in unexpected if not k.startswith(head)]
    missing = [k for k in missing if not k.startswith(("fc_norm",) + head)]
    if missing or unexpected:
        raise AdapterError(f"{where}: weights do not fit the architecture (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")


def read_state_dict(path: str | Path) -> dict:
    """A state dict saved with ``torch.save`` (tensors only; a checkpoint dict holding
    ``state_dict`` or ``model`` is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdapterError(f"weights file {path} could not be read as a state dict: {type(exc).__name__}: {exc}") from exc


def _file_sha1(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def _card_bands(names, card: str) -> tuple[Band, ...]:
    """Band objects (with wavelengths) of ``names`` spelled as a card's sensor spells them ('B8a' -> 'B8A')."""
    c = load_card(card)
    by_name = {b.name: b for b in card_bands(c)}
    try:
        return tuple(by_name[c.canonical(n)] for n in names)
    except KeyError as exc:
        raise AdapterError(str(exc.args[0])) from exc


# ----------------------------------------------------------------------------------------------
# torchgeo


def torchgeo_weights(weights):
    """A torchgeo ``WeightsEnum`` member from itself or its name ('ResNet18_Weights.SENTINEL2_ALL_MOCO')."""
    from torchgeo.models import get_weight

    if not isinstance(weights, str):
        return weights
    try:
        return get_weight(weights)
    except (KeyError, ValueError, AttributeError) as exc:
        raise AdapterError(f"unknown torchgeo weights {weights!r}: name them as <Enum>.<MEMBER>, e.g. "
                           "ResNet18_Weights.SENTINEL2_ALL_MOCO (torchgeo.models lists them)") from exc


def _builder(weights) -> str:
    """The torchgeo model name whose builder takes these weights."""
    from torchgeo.models import get_model_weights, list_models

    for name in list_models():
        try:
            if get_model_weights(name) is type(weights):
                return name
        except (KeyError, ValueError):
            continue
    raise AdapterError(f"torchgeo has no model builder for {weights!r}")


def transform_normalisation(transforms, channels: int) -> tuple[list[float], list[float], list[str]]:
    """The weights' ``Normalize`` steps composed into one (mean, std) per channel, and the steps
    not applied (resizing, cropping: eolab never resamples). Composition: normalising by (m1, s1)
    then (m2, s2) is normalising by (m1 + m2 s1, s1 s2)."""
    mean, std, skipped = np.zeros(channels), np.ones(channels), []
    steps = list(transforms) if isinstance(transforms, nn.Sequential) else [transforms]
    for t in steps:
        if hasattr(t, "mean") and hasattr(t, "std"):
            m = np.broadcast_to(np.asarray(t.mean, dtype=float).ravel(), channels)
            s = np.broadcast_to(np.asarray(t.std, dtype=float).ravel(), channels)
            mean, std = mean + m * std, std * s
        elif type(t).__name__ != "Identity":
            skipped.append(type(t).__name__)
    return mean.tolist(), std.tolist(), skipped


@dataclass(frozen=True)
class TorchgeoInputs:
    """What a torchgeo weights reads, from its metadata (and ``STORED_VALUES``)."""

    weights: object
    model: str  # the torchgeo builder
    bands: tuple[Band, ...]
    unit: str
    scale: float  # from ``unit`` to the values its transforms read
    mean: list[float]
    std: list[float]
    native_size: int | None
    skipped: tuple[str, ...]


def torchgeo_inputs(weights, unit: str | None = None, input_scale: float | None = None) -> TorchgeoInputs:
    w = torchgeo_weights(weights)
    meta = w.meta
    names = meta.get("bands")
    if not names:
        hint = "; DOFA reads any band set: dofa_encoder / --encoder dofa:" if type(w).__name__.startswith("DOFA") else ""
        raise AdapterError(f"{w!r}: its metadata declares no bands (supported: weights whose meta lists "
                           f"Sentinel-2 or Sentinel-1 bands{hint})")
    if not w.name.startswith(("SENTINEL1", "SENTINEL2")):  # Landsat's B1..B7 are not Sentinel-2's B01..B07
        raise AdapterError(f"{w!r}: bands {list(names)} are not Sentinel-2 or Sentinel-1 bands (other sensors: "
                           "wrap the model with ModuleEncoder and that sensor card's bands)")
    sensor = "sentinel1" if w.name.startswith("SENTINEL1") else "sentinel2"
    bands = _card_bands(names, SENSOR_CARDS[sensor])
    known = STORED_VALUES.get((meta.get("dataset", ""), sensor))
    if (unit is None or input_scale is None) and known is None:
        raise AdapterError(f"{w!r}: eolab does not know which values its transforms read (data set "
                           f"{meta.get('dataset')!r}); pass unit= and input_scale= (unit -> those values)")
    unit = unit or known[0]
    scale = float(input_scale if input_scale is not None else known[1])
    mean, std, skipped = transform_normalisation(w.transforms, len(bands))
    sizes = [getattr(t, "size", None) for t in (w.transforms if isinstance(w.transforms, nn.Sequential) else [])]
    size = next((s for s in reversed(sizes) if s), meta.get("img_size"))
    native = int(size[0] if isinstance(size, list | tuple) else size) if size else None
    return TorchgeoInputs(w, _builder(w), bands, unit, scale, mean, std, native, tuple(skipped))


def torchgeo_encoder(weights, weights_file: str | Path | None = None, img_size: int | None = None,
                     unit: str | None = None, input_scale: float | None = None, name: str | None = None,
                     seed: int = 0, progress: bool = False, batch_size: int = 64) -> ModuleEncoder:
    """A torchgeo model with its weights' bands, normalisation and size.

    ``weights``: a ``WeightsEnum`` member or its name. ``weights_file``: None downloads through
    torchgeo (``weights.get_state_dict``; the torch hub cache is reused), a path loads a local state
    dict instead (offline), ``"random"`` keeps the architecture at a ``seed``ed initialisation.
    ``img_size``: the size a ViT reads (default: its native size; its position embeddings are
    resampled to the new grid); a CNN reads any size."""
    from torchgeo.models import get_model

    info = torchgeo_inputs(weights, unit, input_scale)
    w = info.weights
    kwargs = {"in_chans": len(info.bands), "num_classes": 0}
    vit = info.model.startswith(("vit", "scalemae"))
    if vit:
        kwargs["img_size"] = img_size or info.native_size or 224
    elif img_size:
        raise AdapterError(f"{w!r}: img_size applies to ViTs; {info.model} reads any size")
    torch.manual_seed(seed)
    try:
        model = get_model(info.model, None, **kwargs)
    except Exception as exc:
        raise AdapterError(f"{w!r}: torchgeo could not build {info.model} with {kwargs}: {type(exc).__name__}: {exc}") from exc
    if weights_file is None:
        state, source = w.get_state_dict(progress=progress), w.url
    elif str(weights_file) == "random":
        state, source = None, f"random (seed {seed})"
    else:
        state, source = read_state_dict(weights_file), str(weights_file)
    if state is not None:
        _head_tolerant_load(model, state, f"{w!r} from {source}")
    label = name or (f"{w!r}" if state is not None and weights_file is None else
                     f"{w!r} ({'random weights' if state is None else Path(str(weights_file)).name})")
    fp = None
    if weights_file is not None and state is not None:  # the file's bytes and the declaration, not a re-hash of the weights
        fp = hashlib.sha1(json.dumps([repr(w), _file_sha1(Path(weights_file)), kwargs, info.unit, info.scale]).encode()).hexdigest()
    enc = ModuleEncoder(model, info.bands, info.unit, info.mean, info.std, info.scale, label,
                        img_size=kwargs.get("img_size"), native_size=info.native_size, source=source,
                        batch_size=batch_size, fingerprint=fp)
    enc.skipped_transforms = info.skipped
    return enc


# ----------------------------------------------------------------------------------------------
# DOFA: a wavelength-conditioned encoder that reads any band set

DOFA_MEAN, DOFA_STD = 0.15, 0.10
"""DOFA's stated standardisation of reflectance, ``(x - 0.15) / 0.10`` for every band. DOFA was
pre-trained on each sensor standardised by that data set's own per-band mean and std, and torchgeo
declares none ("sensor-dependent"); for a band set of any sensor eolab uses one constant of the order
of DOFA's own reflectance statistics (its HySpecNet-11k band means lie within 0.05-0.26, standard
deviations within 0.05-0.15, in DOFA's normalize_dataset.py). Pass ``mean``/``std`` to change it."""
DOFA_PIXEL_SIZE = 48
"""A pixel time series is broadcast to a constant image of this size: 3 x 3 patches, the smallest
grid with a patch clear of the zero padding of DOFA's patch convolution."""


def dofa_grid(size: int, patch: int) -> int:
    """Patches per side that DOFA's patch embedding yields on ``size`` px: a ``patch``-strided
    convolution with 1 px zero padding (torchgeo's ``DOFAEmbedding``), 14 at 224 px with patch 16."""
    return max(0, (size + 2 - patch) // patch + 1)


class DOFAReader(nn.Module):
    """torchgeo's DOFA read at any size: its ``forward_features`` (dynamic patch embedding from the
    wavelengths, class token, blocks, mean of the patch tokens, ``fc_norm``), with the position
    embeddings - held for its 224 px grid - interpolated to the grid of the images it is given
    (bicubic, timm's ``resample_abs_pos_embed``, as the ViT adapter does when it loads weights).
    ``wavelengths_um``: the centre wavelength of each input channel in micrometres, set before a call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.wavelengths_um: tuple[float, ...] = ()

    def forward(self, x: Tensor) -> Tensor:
        from timm.layers import resample_abs_pos_embed

        m = self.model
        if len(self.wavelengths_um) != x.shape[1]:
            raise ValueError(f"DOFA: {x.shape[1]} channels but {len(self.wavelengths_um)} wavelengths")
        waves = torch.tensor(self.wavelengths_um, dtype=torch.float32, device=x.device)
        tokens, _ = m.patch_embed(x, waves)  # (B, C, H, W) -> (B, g*g, D)
        g = dofa_grid(x.shape[-1], m.patch_size)
        pos = m.pos_embed
        if pos.shape[1] != 1 + g * g:
            native = int(round((pos.shape[1] - 1) ** 0.5))
            pos = resample_abs_pos_embed(pos, [g, g], old_size=[native, native], num_prefix_tokens=1)
        x = tokens + pos[:, 1:]  # (B, g*g, D)
        cls = (m.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], 1)  # (B, 1 + g*g, D)
        for block in m.blocks:
            x = block(x)
        return m.fc_norm(x[:, 1:].mean(1))  # global pool without the class token, as DOFA's global_pool


def _wavelength_label(nm: float) -> str:
    """The name a DOFA plan gives the channel it reads for a task band: its centre wavelength."""
    return f"{nm:.6g}nm"


class DOFAEncoder(ModuleEncoder):
    """DOFA (torchgeo's ``DOFABase16_Weights``/``DOFALarge16_Weights``): reads every task band that
    has a centre wavelength, in the task's own order, whatever the sensor and band names, and is
    given those wavelengths (micrometres, as torchgeo's DOFA takes them). No band is matched by name.

    Bands without a wavelength (radar, indices, climate) or in another unit than ``unit`` are left
    out and named in the plan's adapter text; a task with none left is not applicable. Sizes: each
    task is read at its own size (never resampled), the position embeddings interpolated to that
    grid; a pixel time series is broadcast to a constant ``pixel_size`` image; images smaller than a
    patch and segmentation tasks (no dense features here) are not applicable."""

    def __init__(self, model: nn.Module, unit: str = "reflectance", mean: float = DOFA_MEAN, std: float = DOFA_STD,
                 scale: float = 1.0, name: str = "dofa", native_size: int = 224, pixel_size: int = DOFA_PIXEL_SIZE,
                 source: str = "", batch_size: int = 64, fingerprint: str | None = None):
        for what, v in (("mean", mean), ("std", std)):
            if np.ndim(v):
                raise AdapterError(f"{name}: {what} must be one number (DOFA reads any band set), got {v!r}")
        self.patch = int(model.patch_size)
        if dofa_grid(pixel_size, self.patch) < 1:
            raise AdapterError(f"{name}: pixel_size {pixel_size} is smaller than a {self.patch} px patch")
        self.pixel_size = int(pixel_size)
        super().__init__(DOFAReader(model), (), unit, mean, std, scale, name, native_size=native_size,
                         source=source, batch_size=batch_size, fingerprint=fingerprint)

    @property
    def module(self) -> nn.Module:
        return self.fn.module.model

    def describe(self) -> dict:
        # str and int only: the store writes these as netCDF attributes
        return {**super().describe(), "encoder_reads": f"every band with a centre wavelength, in {self.unit}",
                "pixel_size": self.pixel_size}

    def plan(self, task: Task) -> Plan | NotApplicable:
        wavelengths = task_wavelengths(task)
        keep = [i for i, wl in enumerate(wavelengths) if wl is not None and task.units[i] == self.unit]
        left_out = [f"{b} ({'no wavelength' if wl is None else task.units[i]})"
                    for i, (b, wl) in enumerate(zip(task.bands, wavelengths, strict=True)) if i not in keep]
        if not keep:
            return NotApplicable(f"{self.name} reads bands with a centre wavelength in {self.unit!r}; {task.name} has "
                                 f"none (bands: {', '.join(left_out)})")
        bands = tuple(task.bands[i] for i in keep)
        read = ", ".join(f"{task.bands[i]} {wavelengths[i] / 1000:.4g}" for i in keep)
        adapters = [f"wavelength-conditioned: {len(keep)} bands with their centre wavelengths (um): {read}"]
        if left_out:
            adapters.append(f"left out: {', '.join(left_out)}")
        n = self.fn
        adapters.append(f"standardised (x * {n.scale:g} - {n.mean.item():g}) / {n.std.item():g}")
        dates = self._date_plan(task)
        spatial = self._dofa_spatial(task)
        for p in (dates, spatial):
            if isinstance(p, NotApplicable):
                return p
        adapters += [a for a in (dates[1], spatial[1]) if a]
        return Plan(bands, task.unit_of(bands), dates[0], spatial[0], "; ".join(adapters),
                    tuple(_wavelength_label(wavelengths[i]) for i in keep))

    def _dofa_spatial(self, task: Task) -> tuple[str, str] | NotApplicable:
        native = dofa_grid(self.native_size, self.patch)
        if task.kind == "segmentation":
            return NotApplicable(f"{self.name} yields one vector per image here; the segmentation task {task.name} "
                                 "needs dense (per-patch) features")
        if task.size == 1:
            g = dofa_grid(self.pixel_size, self.patch)
            return "broadcast", (f"pixel values broadcast to a constant {self.pixel_size} px image ({g}x{g} patches, "
                                 f"position embeddings interpolated from {native}x{native})")
        g = dofa_grid(task.size, self.patch)
        if g < 1:
            return NotApplicable(f"{self.name} reads images of at least {self.patch - 2} px (one {self.patch} px "
                                 f"patch); {task.name} samples are {task.size} px (not resampled)")
        if g == native:
            return "as_is", ""
        unread = task.size - (g * self.patch - 1)
        tail = f"; its last {unread} px rows and columns fall outside the patch grid" if unread > 1 else ""
        return "as_is", (f"read at {task.size} px (not resampled; trained at {self.native_size} px): position "
                         f"embeddings interpolated from {native}x{native} to {g}x{g} patches{tail}")

    def _encode(self, images, plan, pool, block, doy, size):
        self.fn.module.wavelengths_um = tuple(float(b[:-2]) / 1000 for b in plan.encoder_bands)  # nm -> um
        return super()._encode(images, plan, pool, block, doy, self.pixel_size if plan.spatial == "broadcast" else None)


def _sincos_pos_embed(model: nn.Module) -> None:
    """Fill a freshly built DOFA's position embedding (torchgeo leaves it at zeros: it is a fixed
    table loaded with the weights) with the 2D sine-cosine table MAE-style encoders fix it to."""
    from torchgeo.models.scale_mae import get_2d_sincos_pos_embed_with_resolution

    g = int(round((model.pos_embed.shape[1] - 1) ** 0.5))
    table = get_2d_sincos_pos_embed_with_resolution(model.pos_embed.shape[-1], g, torch.ones(1), cls_token=True)
    with torch.no_grad():
        model.pos_embed.copy_(table)  # (1, 1 + g*g, D)


def dofa_encoder(weights="DOFABase16_Weights.DOFA_MAE", weights_file: str | Path | None = None,
                 unit: str = "reflectance", mean: float = DOFA_MEAN, std: float = DOFA_STD, input_scale: float = 1.0,
                 pixel_size: int = DOFA_PIXEL_SIZE, name: str | None = None, seed: int = 0, progress: bool = False,
                 batch_size: int = 64) -> DOFAEncoder:
    """DOFA as a wavelength-conditioned encoder (see ``DOFAEncoder``).

    ``weights``: ``DOFABase16_Weights.DOFA_MAE`` or ``DOFALarge16_Weights.DOFA_MAE`` (or the member).
    ``weights_file``: None downloads through torchgeo (``weights.get_state_dict``), a path loads a
    local state dict, ``"random"`` keeps the architecture at a ``seed``ed initialisation (position
    embeddings: the 2D sine-cosine table). Inputs in ``unit``, standardised as
    ``(x * input_scale - mean) / std`` for every band (``DOFA_MEAN``, ``DOFA_STD``: why these)."""
    from torchgeo.models import get_model

    w = torchgeo_weights(weights)
    model_name = _builder(w)
    if not model_name.startswith("dofa"):
        raise AdapterError(f"{w!r} are not DOFA weights (torchgeo builds them with {model_name}); use torchgeo_encoder")
    torch.manual_seed(seed)
    model = get_model(model_name, None, num_classes=0)  # 224 px, patch 16: the grid the weights hold
    if weights_file is None:
        state, source = w.get_state_dict(progress=progress), w.url
        identity = w.url
    elif str(weights_file) == "random":
        state, source = None, f"random (seed {seed})"
        identity = f"random:{seed}"
        _sincos_pos_embed(model)
    else:
        state, source = read_state_dict(weights_file), str(weights_file)
        identity = _file_sha1(Path(weights_file))
    if state is not None:
        _head_tolerant_load(model, state, f"{w!r} from {source}")
    label = name or (f"{w!r}" if weights_file is None else
                     f"{w!r} ({'random weights' if state is None else Path(str(weights_file)).name})")
    # identity of the weights (URL, file bytes or seed) and every declared input, not a re-hash of 86M weights
    fp = hashlib.sha1(json.dumps(["dofa-v1", repr(w), identity, unit, float(mean), float(std), float(input_scale),
                                  int(pixel_size)]).encode()).hexdigest()
    return DOFAEncoder(model, unit, mean, std, input_scale, label, native_size=224, pixel_size=pixel_size,
                       source=source, batch_size=batch_size, fingerprint=fp)


# ----------------------------------------------------------------------------------------------
# timm


def timm_encoder(model_name: str, bands, unit: str, mean=0.0, std=1.0, input_scale: float = 1.0,
                 pretrained: bool | str | Path = False, img_size: int | None = None, name: str | None = None,
                 seed: int = 0, batch_size: int = 64, **kwargs) -> ModuleEncoder:
    """A timm model reading ``bands`` (names or Band objects, in the model's channel order) in
    ``unit``, normalised as ``(x * input_scale - mean) / std`` (scalars or one per band).
    ``pretrained``: False (random, ``seed``), True (timm's download path; timm adapts the stem to
    ``len(bands)`` channels) or a local state-dict file. ``img_size``: for ViTs (default: the model's)."""
    import timm

    bands = tuple(bands)
    if not bands:
        raise AdapterError(f"timm model {model_name}: declare its bands")
    if img_size:
        kwargs["img_size"] = img_size
    torch.manual_seed(seed)
    local = pretrained if isinstance(pretrained, str | Path) and not isinstance(pretrained, bool) else None
    try:
        model = timm.create_model(model_name, pretrained=pretrained is True, in_chans=len(bands), num_classes=0, **kwargs)
    except Exception as exc:
        raise AdapterError(f"timm could not build {model_name!r} ({type(exc).__name__}: {exc})") from exc
    fp = None
    if local is not None:
        _head_tolerant_load(model, read_state_dict(local), f"timm {model_name} from {local}")
        fp = hashlib.sha1(json.dumps([model_name, _file_sha1(Path(local)), [getattr(b, "name", b) for b in bands],
                                      unit, np.asarray(mean).tolist(), np.asarray(std).tolist(), input_scale,
                                      repr(sorted(kwargs.items()))]).encode()).hexdigest()
    patch = getattr(model, "patch_embed", None)
    fixed = None if getattr(model, "dynamic_img_size", False) or patch is None else getattr(patch, "img_size", None)
    fixed = int(fixed[0]) if isinstance(fixed, list | tuple) else fixed
    source = str(local) if local else ("timm pretrained" if pretrained is True else f"random (seed {seed})")
    return ModuleEncoder(model, bands, unit, mean, std, input_scale, name or f"timm:{model_name}", img_size=fixed,
                         source=source, batch_size=batch_size, fingerprint=fp)


# ----------------------------------------------------------------------------------------------
# A random twin of any module-backed encoder


def random_twin(encoder: ModuleEncoder | FunctionEncoder, seed: int = 0, name: str = "random_init") -> ModuleEncoder | FunctionEncoder:
    """The same architecture, bands and normalisation, weights re-initialised with ``seed``: every
    submodule's ``reset_parameters`` (BatchNorm's resets its running statistics too); parameters
    held by a module without one (a ViT's position embedding and class token) are drawn from
    N(0, 0.02), timm's own initialisation of them, and listed in ``twin_note``."""
    module = encoder.fn
    if not isinstance(module, nn.Module):
        raise TypeError(f"{encoder.name}: a random twin needs a torch module; this encoder wraps "
                        f"{type(module).__name__}")
    twin_module = copy.deepcopy(module)
    torch.manual_seed(seed)
    drawn = []
    with torch.no_grad():
        for path, sub in twin_module.named_modules():
            if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                sub.reset_parameters()
            else:
                for pname, p in sub.named_parameters(recurse=False):
                    p.normal_(0.0, 0.02)
                    drawn.append(f"{path}.{pname}" if path else pname)
    note = f"reset_parameters of every submodule (seed {seed})" + (
        f"; drawn from N(0, 0.02) (no reset_parameters): {', '.join(drawn)}" if drawn else "")
    fp = hashlib.sha1(json.dumps(["random_twin-v1", encoder.fingerprint(), seed]).encode()).hexdigest()
    if isinstance(encoder, ModuleEncoder):
        twin = copy.copy(encoder)
        twin.fn, twin.name, twin._fingerprint = twin_module, name, fp
        twin.source, twin.twin_note = f"random twin of {encoder.name}", note
    else:
        twin = FunctionEncoder(twin_module, encoder.bands, encoder.unit, name=name, num_dates=encoder.num_dates,
                               img_size=encoder.img_size, fingerprint=fp, batch_size=encoder.batch_size)
        twin._wavelengths = getattr(encoder, "_wavelengths", ())
        twin.twin_note = note
    return twin


def module_backed(encoder: BenchEncoder) -> bool:
    return isinstance(encoder, FunctionEncoder) and isinstance(encoder.fn, nn.Module)


# ----------------------------------------------------------------------------------------------
# Precomputed embeddings


class MissingEmbeddings(ValueError):
    """Task samples without an embedding in the file (the message gives the count)."""


class EmbeddingsEncoder(BenchEncoder):
    """Precomputed embeddings (a Major-TOM or Clay embedding product, or any encoder's exported
    vectors) as an encoder: a table of ``id``, ``lon``, ``lat`` and a vector.

    Files: GeoParquet/Parquet (the vector as a list column ``vector_column``, or columns
    ``emb_0 .. emb_{D-1}``; lon/lat from columns or the point geometry), zarr or netCDF read with
    xarray (a ``(sample, dim)`` variable ``vector_column``, ``id``/``lon``/``lat`` coordinates or
    variables; ``eolab embed``'s output reads as it is). Task samples are joined by ``id`` where the
    file has ids and every task id is among them, else to the nearest embedding within
    ``tolerance_m`` metres of the sample's lon/lat (``join`` forces one). A task with samples that
    have no embedding raises ``MissingEmbeddings`` giving the count (an error row in the table: the
    probes need every sample). It reads no images, so the augmented-view diagnostics do not apply."""

    has_axes = False
    reads_images = False

    def __init__(self, path: str | Path, name: str | None = None, id_column: str = "id", lon_column: str = "lon",
                 lat_column: str = "lat", vector_column: str = "embedding", tolerance_m: float | None = None,
                 join: str = "auto"):
        self.path = Path(path)
        if join not in ("auto", "id", "lonlat"):
            raise AdapterError(f"{self.path}: join must be auto, id or lonlat, got {join!r}")
        if join == "lonlat" and tolerance_m is None:
            raise AdapterError(f"{self.path}: a join by lon/lat needs tolerance_m (metres)")
        self.name = name or f"embeddings:{self.path.name}"
        self.bands, self.unit = (), ""
        self.tolerance_m, self.join = tolerance_m, join
        self.columns = (id_column, lon_column, lat_column, vector_column)
        self.ids, self.lonlat, self.vectors = _read_embeddings(self.path, *self.columns)
        self._index = {str(i): k for k, i in enumerate(self.ids)} if self.ids is not None else {}

    def fingerprint(self) -> str:
        if getattr(self, "_fingerprint", None):
            return self._fingerprint
        files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        content = [f"{p.relative_to(self.path) if self.path.is_dir() else p.name}:{_file_sha1(p)}" for p in files]
        self._fingerprint = hashlib.sha1(json.dumps(["embeddings-v1", content, self.columns, self.tolerance_m,
                                                     self.join]).encode()).hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        return {**super().describe(), "embeddings_file": str(self.path), "embedding_dim": int(self.vectors.shape[1]),
                "join": self.join, "tolerance_m": self.tolerance_m or 0.0}

    def plan(self, task: Task) -> Plan | NotApplicable:
        how = {"id": "by id", "lonlat": "by lon/lat", "auto": "by id, else lon/lat"}[self.join]
        tol = f" within {self.tolerance_m:g} m" if self.tolerance_m is not None and self.join != "id" else ""
        return Plan((), "", "single", "as_is", f"precomputed embeddings ({self.path.name}) joined {how}{tol}")

    def rows_for(self, ids, lonlat) -> tuple[np.ndarray, str]:
        """Row of the file for each sample (-1: none) and how they were joined."""
        ids = [str(i) for i in ids]
        by_lonlat = self.join != "id" and self.tolerance_m is not None and self.lonlat is not None
        if self.join in ("auto", "id") and self._index:
            rows = np.array([self._index.get(i, -1) for i in ids])
            if (rows >= 0).all() or not by_lonlat:
                return rows, "id"
        if self.join == "id":
            raise MissingEmbeddings(f"{self.path}: no id column {self.columns[0]!r} to join by id")
        if not by_lonlat:
            raise MissingEmbeddings(f"{self.path}: no ids, and no tolerance_m to join by lon/lat")
        return _nearest(np.asarray(lonlat, dtype=float), self.lonlat, self.tolerance_m), "lonlat"

    def features(self, task, batch, plan, pool="mean", block=-1, drop=()) -> np.ndarray:
        lonlat = batch.get("lonlat")
        rows, how = self.rows_for(batch["id"], lonlat if lonlat is not None else np.full((len(batch["id"]), 2), np.nan))
        missing = int((rows < 0).sum())
        if missing:
            where = f"within {self.tolerance_m:g} m by lon/lat" if how == "lonlat" else "by id" + (
                "; give tolerance_m to join the others by lon/lat" if self.lonlat is not None and self.tolerance_m is None else "")
            raise MissingEmbeddings(f"{missing} of {len(rows)} samples of {task.name} have no embedding in "
                                    f"{self.path.name} ({where})")
        return self.vectors[rows]


def _nearest(query: np.ndarray, points: np.ndarray, tolerance_m: float) -> np.ndarray:
    """Index of the nearest of ``points`` (lon, lat degrees) to each query within ``tolerance_m``
    great-circle metres (-1 where none, or the query has no coordinates)."""
    from scipy.spatial import cKDTree

    def xyz(lonlat):  # unit vectors: chord distance is monotone in great-circle distance
        lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
        return np.c_[np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]

    radius = 6_371_008.8
    ok = np.isfinite(query).all(1)
    out = np.full(len(query), -1)
    if not ok.any():
        return out
    dist, idx = cKDTree(xyz(points)).query(xyz(query[ok]))
    metres = 2 * radius * np.arcsin(np.clip(dist / 2, 0, 1))
    out[np.flatnonzero(ok)] = np.where(metres <= tolerance_m, idx, -1)
    return out


def _read_embeddings(path: Path, id_col: str, lon_col: str, lat_col: str, vec_col: str):
    """(ids or None, lonlat (M, 2) or None, vectors (M, D) float32) of an embeddings file."""
    if not path.exists():
        raise FileNotFoundError(f"embeddings file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".geoparquet", ".pq"):
        return _read_parquet(path, id_col, lon_col, lat_col, vec_col)
    if suffix in (".zarr", ".nc", ".nc4", ".netcdf") or path.is_dir():
        return _read_xarray(path, id_col, lon_col, lat_col, vec_col)
    raise AdapterError(f"{path}: embeddings files are .parquet/.geoparquet, .zarr or .nc")


def _read_parquet(path: Path, id_col, lon_col, lat_col, vec_col):
    import pandas as pd

    df = pd.read_parquet(path)
    emb = sorted((c for c in df.columns if isinstance(c, str) and c.startswith("emb_") and c[4:].isdigit()),
                 key=lambda c: int(c[4:]))
    if vec_col in df.columns:
        vectors = np.stack([np.asarray(v, dtype=np.float32) for v in df[vec_col]])
    elif emb:
        vectors = df[emb].to_numpy(np.float32)
    else:
        raise AdapterError(f"{path}: no vector column {vec_col!r} and no emb_0..emb_D columns (columns: {list(df.columns)})")
    lonlat = None
    if lon_col in df.columns and lat_col in df.columns:
        lonlat = df[[lon_col, lat_col]].to_numpy(np.float64)
    elif "geometry" in df.columns:  # GeoParquet points (WKB)
        import geopandas as gpd

        g = gpd.read_parquet(path).to_crs(4326).geometry.centroid
        lonlat = np.c_[g.x.to_numpy(), g.y.to_numpy()]
    ids = df[id_col].astype(str).to_numpy() if id_col in df.columns else None
    return _checked(path, ids, lonlat, vectors)


def _read_xarray(path: Path, id_col, lon_col, lat_col, vec_col):
    import xarray as xr

    ds = xr.open_zarr(path) if path.suffix.lower() == ".zarr" or path.is_dir() else xr.open_dataset(path)
    with ds:
        if vec_col not in ds:
            raise AdapterError(f"{path}: no variable {vec_col!r} (variables: {list(ds.data_vars)})")
        var = ds[vec_col]
        if var.ndim != 2:
            raise AdapterError(f"{path}: {vec_col!r} has dims {var.dims}; expected (sample, dim)")
        vectors = var.values.astype(np.float32)
        get = lambda k: ds[k].values if k in ds.variables else None  # noqa: E731 - coordinate or variable
        ids = get(id_col)
        lon, lat = get(lon_col), get(lat_col)
        lonlat = np.c_[lon, lat].astype(np.float64) if lon is not None and lat is not None else None
        return _checked(path, None if ids is None else np.asarray(ids).astype(str), lonlat, vectors)


def _checked(path, ids, lonlat, vectors):
    if ids is None and lonlat is None:
        raise AdapterError(f"{path}: neither ids nor lon/lat: embeddings cannot be joined to task samples")
    if not np.isfinite(vectors).all():
        raise AdapterError(f"{path}: {int((~np.isfinite(vectors)).any(1).sum())} embeddings hold NaN or inf")
    if ids is not None and len(set(ids)) != len(ids):
        raise AdapterError(f"{path}: ids are not unique")
    return ids, lonlat, vectors


def write_embeddings(path: str | Path, ids, lonlat, vectors) -> Path:
    """Write embeddings as a Parquet table (``id``, ``lon``, ``lat``, ``embedding`` list column)
    that ``EmbeddingsEncoder`` reads back."""
    import pandas as pd

    path, lonlat = Path(path), np.asarray(lonlat, dtype=np.float64)
    df = pd.DataFrame({"id": [str(i) for i in ids], "lon": lonlat[:, 0], "lat": lonlat[:, 1],
                       "embedding": list(np.asarray(vectors, dtype=np.float32))})
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


# ----------------------------------------------------------------------------------------------
# Specs: the command line's --encoder and encoder YAML files

SPEC_KINDS = ("torchgeo", "dofa", "timm", "embeddings")
YAML_FIELDS = {
    "torchgeo": {"kind", "name", "weights", "weights_file", "img_size", "unit", "input_scale", "seed"},
    "dofa": {"kind", "name", "weights", "weights_file", "unit", "mean", "std", "input_scale", "pixel_size", "seed"},
    "timm": {"kind", "name", "model", "weights_file", "pretrained", "bands", "card", "unit", "mean", "std",
             "input_scale", "img_size", "seed"},
    "embeddings": {"kind", "name", "path", "id_column", "lon_column", "lat_column", "vector_column", "tolerance_m", "join"},
}


def spec_encoder(spec: str, seed: int = 0) -> BenchEncoder:
    """An encoder from a spec: ``torchgeo:<Enum>.<MEMBER>[@weights.pth|@random]``,
    ``dofa:[<Enum>.<MEMBER>][@weights.pth|@random]`` (default ``DOFABase16_Weights.DOFA_MAE``),
    ``embeddings:<path>``, or an encoder YAML file (``kind: torchgeo | dofa | timm | embeddings`` and
    that kind's fields; a timm model's bands need one). AdapterError naming the spec on bad input."""
    try:
        if spec.endswith((".yaml", ".yml")):
            return _yaml_encoder(Path(spec), seed)
        kind, sep, rest = spec.partition(":")
        if not sep or kind not in SPEC_KINDS or not rest:
            raise AdapterError("expected torchgeo:<Weights>[@file], dofa:[<Weights>][@file], embeddings:<path> "
                               "or an encoder YAML file")
        if kind in ("torchgeo", "dofa"):
            weights, _, file = rest.partition("@")
            if kind == "dofa":
                return dofa_encoder(weights or "DOFABase16_Weights.DOFA_MAE", weights_file=file or None, seed=seed)
            return torchgeo_encoder(weights, weights_file=file or None, seed=seed)
        if kind == "embeddings":
            return EmbeddingsEncoder(rest)
        raise AdapterError(f"a timm model needs its bands and unit: write an encoder YAML file "
                           f"(kind: timm, model: {rest}, bands: [...] or card: ..., unit: ...)")
    except (AdapterError, CardError, FileNotFoundError) as exc:
        raise AdapterError(f"encoder {spec!r}: {exc}") from exc


def _yaml_encoder(path: Path, seed: int) -> BenchEncoder:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"encoder file {path} does not exist")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or raw.get("kind") not in SPEC_KINDS:
        raise AdapterError(f"{path}: field 'kind' must be one of {SPEC_KINDS}")
    kind = raw["kind"]
    unknown = sorted(set(raw) - YAML_FIELDS[kind])
    if unknown:
        raise AdapterError(f"{path}: unknown field(s) {unknown} for kind {kind} (allowed: {sorted(YAML_FIELDS[kind])})")

    def rel(p):  # paths relative to the YAML file's folder
        return p if p in (None, "random") or Path(p).is_absolute() else str(path.parent / p)

    seed = int(raw.get("seed", seed))
    if kind == "torchgeo":
        if "weights" not in raw:
            raise AdapterError(f"{path}: field 'weights' (e.g. ResNet18_Weights.SENTINEL2_ALL_MOCO) is required")
        return torchgeo_encoder(raw["weights"], weights_file=rel(raw.get("weights_file")), img_size=raw.get("img_size"),
                                unit=raw.get("unit"), input_scale=raw.get("input_scale"), name=raw.get("name"), seed=seed)
    if kind == "dofa":
        options = {k: raw[k] for k in ("unit", "mean", "std", "input_scale", "pixel_size", "name") if k in raw}
        return dofa_encoder(raw.get("weights", "DOFABase16_Weights.DOFA_MAE"), weights_file=rel(raw.get("weights_file")),
                            seed=seed, **options)
    if kind == "embeddings":
        if "path" not in raw:
            raise AdapterError(f"{path}: field 'path' is required")
        return EmbeddingsEncoder(rel(raw["path"]), **{k: raw[k] for k in raw if k not in ("kind", "path")})
    for key in ("model", "unit"):
        if key not in raw:
            raise AdapterError(f"{path}: field {key!r} is required for kind timm")
    card = raw.get("card")
    names = raw.get("bands") or (load_card(card).band_names if card else None)
    if not names:
        raise AdapterError(f"{path}: field 'bands' (or 'card': all of a sensor card's bands) is required for kind timm")
    bands = _card_bands(names, card) if card else tuple(str(b) for b in names)
    weights = rel(raw.get("weights_file")) or bool(raw.get("pretrained", False))
    return timm_encoder(raw["model"], bands, raw["unit"], mean=raw.get("mean", 0.0), std=raw.get("std", 1.0),
                        input_scale=float(raw.get("input_scale", 1.0)), pretrained=weights,
                        img_size=raw.get("img_size"), name=raw.get("name"), seed=seed)
