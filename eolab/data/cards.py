"""Sensor cards: what a sensor's or product's numbers mean, declared in a small YAML file.

A card names its bands (with centre wavelength, bandwidth and ground sampling distance), the unit
the files hold and how to convert it (``physical = (stored + baseline offset) * scale + offset``),
the no-data value and valid range, and the quality (cloud) band with its flag values. Cards ship in
``eolab/data/sensors/*.yaml``; a user adds one as a YAML file and passes its path wherever a card
name is accepted. Bands are identified by ``(sensor, name)``: Landsat's ``B5`` (near infrared) and
Sentinel-2's ``B05`` (red edge) are different bands, so a name is only ever resolved within one
card's sensor, and bands are matched across sensors by wavelength (``match_bands``), never by name.

Every field is checked when a card is loaded; a bad one is an error naming the card file and field.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CARD_DIR = Path(__file__).resolve().parent / "sensors"
"""The cards eolab ships (package data)."""

UNITS = ("reflectance", "radiance", "dn", "db", "linear", "kelvin", "celsius", "index", "class")
"""The closed list of units a card may name: ``unit`` (what the files hold) and ``to`` (after conversion)."""


class CardError(ValueError):
    """A card that cannot be used; the message names the card file and the field."""


@dataclass(frozen=True)
class CardBand:
    """One band of a card; ``to``/``scale``/``offset`` are the card's unless the band overrides them
    (Landsat's thermal band is kelvin in a reflectance product)."""

    name: str
    wavelength_nm: float | None
    bandwidth_nm: float | None
    gsd_m: float
    aliases: tuple[str, ...] = ()
    to: str = "reflectance"
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Quality:
    """The quality (cloud) band: class values or bit positions by flag name, and which flags make a
    pixel unusable."""

    band: str
    gsd_m: float
    kind: str  # "classes" (a pixel's value is one flag) or "bits" (each flag is one bit)
    flags: dict[str, int]
    invalid: tuple[str, ...]

    def usable(self, values):
        """(H, W) bool: pixels whose quality value sets none of the ``invalid`` flags."""
        import numpy as np

        values = np.asarray(values)
        bad = np.zeros(values.shape, dtype=bool)
        for flag in self.invalid:
            v = self.flags[flag]
            bad |= (values == v) if self.kind == "classes" else ((values.astype(np.int64) >> v) & 1).astype(bool)
        return ~bad


@dataclass(frozen=True)
class Card:
    name: str
    sensor: str
    title: str
    level: str
    unit: str
    to: str
    scale: float
    offset: float
    nodata: float | None
    valid_range: tuple[float, float] | None
    bands: tuple[CardBand, ...]
    quality: Quality | None = None
    baseline_offsets: tuple[tuple[str, str, float], ...] = ()  # (from baseline, until baseline (excl.), DN offset)
    path: Path | None = None
    _lookup: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    def band(self, name: str) -> CardBand:
        return self.bands[self.band_names.index(self.canonical(name))]

    def canonical(self, name: str) -> str:
        """The card's name for a spelling of one of its bands ('B2', 'b02', 'blue' -> 'B02' on Sentinel-2).

        Names resolve only within this card: a spelling the card does not know is a KeyError, never
        a band of another sensor."""
        key = _spelling(name)
        if key in self._lookup:
            return self._lookup[key]
        raise KeyError(f"unknown band name {name!r} for sensor {self.sensor!r} (card {self.where}); "
                       f"known: {', '.join(self.band_names)}")

    def baseline_offset(self, baseline: str | None) -> float:
        """Digital-number offset of a processing baseline such as '04.00', 'N0400' or 'N9999' (0 if none applies)."""
        if not baseline:
            return 0.0
        value = _baseline_number(baseline)
        if value is None:
            return 0.0
        for start, until, dn in self.baseline_offsets:
            if _baseline_number(start) <= value < _baseline_number(until):
                return dn
        return 0.0

    @property
    def where(self) -> str:
        return str(self.path) if self.path else self.name


def _spelling(name: str) -> str:
    """Normalised spelling: case-folded, zero-padded numbers removed ('B02' and 'B2' compare equal)."""
    n = name.strip().upper()
    return re.sub(r"(?<=[A-Z])0+(?=\d)", "", n)


def _baseline_number(baseline: str) -> int | None:
    digits = re.sub(r"\D", "", str(baseline))
    return int(digits) if digits else None


def _get(raw: dict, key: str, where: str, kinds, required=True, default=None):
    if key not in raw:
        if required:
            raise CardError(f"{where}: missing field {key!r}")
        return default
    value = raw[key]
    if value is None and not required:
        return default
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise CardError(f"{where}: field {key!r} must be {getattr(kinds, '__name__', kinds)}, got {value!r}")
    return value


def _unit(value, where: str, key: str) -> str:
    if value not in UNITS:
        raise CardError(f"{where}: field {key!r}: unknown unit {value!r}; known units: {', '.join(UNITS)}")
    return value


def parse_card(raw: dict, path: Path | None = None) -> Card:
    """A card from its YAML mapping; every field checked, errors name ``path`` and the field."""
    where = str(path) if path else "card"
    if not isinstance(raw, dict):
        raise CardError(f"{where}: a card is a YAML mapping of fields, got {type(raw).__name__}")
    known = {"name", "sensor", "title", "level", "unit", "to", "scale", "offset", "nodata", "valid_range", "bands",
             "quality", "baseline_offsets"}
    extra = sorted(set(raw) - known)
    if extra:
        raise CardError(f"{where}: unknown field(s) {extra}; a card has {sorted(known)}")
    name = _get(raw, "name", where, str)
    unit = _unit(_get(raw, "unit", where, str), where, "unit")
    to = _unit(_get(raw, "to", where, str, required=False, default=unit), where, "to")
    scale = float(_get(raw, "scale", where, (int, float), required=False, default=1.0))
    offset = float(_get(raw, "offset", where, (int, float), required=False, default=0.0))
    valid = _get(raw, "valid_range", where, list, required=False)
    if valid is not None and (len(valid) != 2 or not all(isinstance(v, (int, float)) for v in valid) or valid[0] > valid[1]):
        raise CardError(f"{where}: field 'valid_range' must be [low, high], got {valid!r}")
    bands_raw = _get(raw, "bands", where, list)
    if not bands_raw:
        raise CardError(f"{where}: field 'bands' lists no band")
    bands = []
    for i, b in enumerate(bands_raw):
        bw = f"{where}: bands[{i}]"
        if not isinstance(b, dict):
            raise CardError(f"{bw}: a band is a mapping (name, wavelength_nm, bandwidth_nm, gsd_m), got {b!r}")
        unknown = sorted(set(b) - {"name", "wavelength_nm", "bandwidth_nm", "gsd_m", "aliases", "to", "scale", "offset"})
        if unknown:
            raise CardError(f"{bw}: unknown field(s) {unknown}")
        bands.append(CardBand(
            name=str(_get(b, "name", bw, (str, int))),
            wavelength_nm=_number_or_none(_get(b, "wavelength_nm", bw, (int, float), required=False)),
            bandwidth_nm=_number_or_none(_get(b, "bandwidth_nm", bw, (int, float), required=False)),
            gsd_m=float(_get(b, "gsd_m", bw, (int, float))),
            aliases=tuple(str(a) for a in _get(b, "aliases", bw, list, required=False, default=[])),
            to=_unit(b.get("to", to), bw, "to"),
            scale=float(_get(b, "scale", bw, (int, float), required=False, default=scale)),
            offset=float(_get(b, "offset", bw, (int, float), required=False, default=offset)),
        ))
    lookup: dict[str, str] = {}
    for b in bands:
        for spelling in (b.name, *b.aliases):
            key = _spelling(spelling)
            if lookup.get(key, b.name) != b.name:
                raise CardError(f"{where}: field 'bands': spelling {spelling!r} names both {lookup[key]} and {b.name}")
            lookup[key] = b.name
    quality = None
    if raw.get("quality") is not None:
        q = _get(raw, "quality", where, dict)
        qw = f"{where}: quality"
        kind = _get(q, "kind", qw, str)
        if kind not in ("classes", "bits"):
            raise CardError(f"{qw}: field 'kind' must be 'classes' or 'bits', got {kind!r}")
        flags = {str(k): int(v) for k, v in _get(q, "flags", qw, dict).items()}
        invalid = tuple(_get(q, "invalid", qw, list, required=False, default=[]))
        unknown = [f for f in invalid if f not in flags]
        if unknown:
            raise CardError(f"{qw}: field 'invalid' names flags {unknown} that 'flags' does not define")
        quality = Quality(str(_get(q, "band", qw, str)), float(_get(q, "gsd_m", qw, (int, float))), kind, flags, invalid)
    offsets = []
    for i, o in enumerate(_get(raw, "baseline_offsets", where, list, required=False, default=[])):
        if not isinstance(o, dict) or not {"from", "dn"} <= set(o):
            raise CardError(f"{where}: baseline_offsets[{i}] must be {{from: '04.00', until: '99.99', dn: -1000}}, got {o!r}")
        offsets.append((str(o["from"]), str(o.get("until", "99.99")), float(o["dn"])))
    nodata = raw.get("nodata")
    if nodata is not None and not isinstance(nodata, (int, float)):
        raise CardError(f"{where}: field 'nodata' must be a number or null, got {nodata!r}")
    return Card(name=name, sensor=str(_get(raw, "sensor", where, str)), title=str(raw.get("title", name)),
                level=str(raw.get("level", "")), unit=unit, to=to, scale=scale, offset=offset, nodata=nodata,
                valid_range=tuple(valid) if valid else None, bands=tuple(bands), quality=quality,
                baseline_offsets=tuple(offsets), path=path, _lookup=lookup)


def _number_or_none(v):
    return None if v is None else float(v)


def card_names() -> list[str]:
    """The names of the cards eolab ships."""
    return sorted(p.stem for p in CARD_DIR.glob("*.yaml"))


def is_card_path(ref: str | Path) -> bool:
    return str(ref).endswith((".yaml", ".yml")) or "/" in str(ref)


def _load(path: Path) -> Card:
    st = path.stat()  # keyed by modification time and size: an edited card is read again
    return _load_version(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _load_version(path: Path, mtime_ns: int, size: int) -> Card:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not valid YAML ({exc})") from exc
    return parse_card(raw, path)


def load_card(ref: str | Path, base: Path | None = None) -> Card:
    """A card by name (``sentinel2_l2a``) or by path to a YAML file (relative paths against ``base``)."""
    if isinstance(ref, Card):
        return ref
    if is_card_path(ref):
        path = Path(ref).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise CardError(f"sensor card {path} does not exist")
        return _load(path.resolve())
    path = CARD_DIR / f"{ref}.yaml"
    if not path.is_file():
        raise CardError(f"unknown sensor card {ref!r}; shipped cards: {', '.join(card_names())} "
                        "(or give the path to a card YAML file)")
    return _load(path)


def sensor_card(sensor: str) -> Card:
    """The card that defines a sensor's bands: a card name or path, or a sensor id (its first shipped
    card in name order carrying every band of the sensor, e.g. 'sentinel2' -> sentinel2_l1c)."""
    if is_card_path(sensor) or (CARD_DIR / f"{sensor}.yaml").is_file():
        return load_card(sensor)
    cards = [load_card(n) for n in card_names()]
    matching = [c for c in cards if c.sensor == sensor]
    if not matching:
        raise CardError(f"unknown sensor {sensor!r}; known sensors: {', '.join(sorted({c.sensor for c in cards}))} "
                        "(or give a card name or path)")
    return max(matching, key=lambda c: len(c.bands))


@dataclass
class BandMatch:
    """``match_bands``'s answer: target band -> source band (names), and what found no partner."""

    mapping: dict[str, str]
    unmatched_source: list[str]
    unmatched_target: list[str]


def match_bands(source: Card | str, target: Card | str, tolerance_nm: float = 20.0) -> BandMatch:
    """Match ``target``'s bands to ``source``'s by nearest centre wavelength within ``tolerance_nm``.

    Each source band is used at most once (closest pairs first), so Landsat's one NIR band does not
    stand in for both of Sentinel-2's B08 and B8A. Bands without a wavelength are matched by name
    only when both cards are of the same sensor.
    """
    src, tgt = load_card(source), load_card(target)
    pairs = []
    for t in tgt.bands:
        for s in src.bands:
            if t.wavelength_nm is None or s.wavelength_nm is None:
                if src.sensor == tgt.sensor and t.name == s.name:
                    pairs.append((0.0, t.name, s.name))
                continue
            gap = abs(t.wavelength_nm - s.wavelength_nm)
            if gap <= tolerance_nm:
                pairs.append((gap, t.name, s.name))
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for _, t, s in sorted(pairs):
        if t not in mapping and s not in used:
            mapping[t] = s
            used.add(s)
    mapping = {b: mapping[b] for b in tgt.band_names if b in mapping}  # in the target's band order
    return BandMatch(mapping, [b for b in src.band_names if b not in used], [b for b in tgt.band_names if b not in mapping])
