"""Band metadata, from the sensor cards (``cards.py``, ``sensors/*.yaml``).

Bands are identified by name everywhere in eolab, never by channel index alone: two sources
can store the same bands in different orders (EuroSAT puts B8A last; L2A products lack B10),
and a model trained on one order silently produces garbage on another. A name means something
only within one sensor (Landsat's B5 is near infrared, Sentinel-2's B05 red edge), so a band is
``(sensor, name)`` and carries its wavelength; `BANDS` holds eolab's default bands (Sentinel-2
and Sentinel-1, whose names do not collide), keyed by name for the code that predates cards.
Wavelengths are the Sentinel-2A central wavelengths from the ESA MSI user guide.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cards import Card, load_card, sensor_card


@dataclass(frozen=True)
class Band:
    name: str
    wavelength_nm: float | None  # central wavelength
    resolution_m: float  # native ground sampling distance
    sensor: str = "sentinel2"
    bandwidth_nm: float | None = None


def card_bands(card: Card | str) -> tuple[Band, ...]:
    """A card's bands as `Band` objects, in the card's order."""
    c = load_card(card)
    return tuple(Band(b.name, b.wavelength_nm, b.gsd_m, c.sensor, b.bandwidth_nm) for b in c.bands)


_S2 = card_bands("sentinel2_l1c")
_S1 = tuple(b for b in card_bands("sentinel1_grd") if b.name in ("VV", "VH"))

BANDS: dict[str, Band] = {b.name: b for b in _S2 + _S1}

# Sentinel-2 band sets in the order eolab uses (spectral order, B8A after B08).
S2_L1C = tuple(b.name for b in _S2)
S2_L2A = load_card("sentinel2_l2a").band_names  # bottom-of-atmosphere products drop the cirrus band
# The order in which EuroSAT-MS GeoTIFFs (and torchgeo's EuroSAT) store their 13 bands.
EUROSAT_FILE_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")


def canonical_band_name(name: str, sensor: str = "sentinel2") -> str:
    """Map spellings such as 'B2', 'b02', 'B8a' to the sensor's canonical 'B02', 'B8A'.

    ``sensor`` is a sensor id ('sentinel2', 'sentinel1', 'landsat89', ...), a card name or a card
    path; names resolve only within that sensor's card, so Landsat's 'B5' never becomes
    Sentinel-2's 'B05'. KeyError for a name the sensor does not have."""
    return sensor_card(sensor).canonical(name)


def wavelengths(bands: tuple[str, ...] | list[str]) -> list[float | None]:
    return [BANDS[b].wavelength_nm for b in bands]
