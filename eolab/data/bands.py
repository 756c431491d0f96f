"""Sentinel-2 (and Sentinel-1) band metadata.

Bands are identified by name everywhere in eolab, never by channel index alone: two sources
can store the same bands in different orders (EuroSAT puts B8A last; L2A products lack B10),
and a model trained on one order silently produces garbage on another. Wavelengths are the
Sentinel-2A central wavelengths from the ESA MSI user guide.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    name: str
    wavelength_nm: float | None  # central wavelength; None for SAR polarisations
    resolution_m: int  # native ground sampling distance


_S2 = [
    Band("B01", 442.7, 60),
    Band("B02", 492.4, 10),
    Band("B03", 559.8, 10),
    Band("B04", 664.6, 10),
    Band("B05", 704.1, 20),
    Band("B06", 740.5, 20),
    Band("B07", 782.8, 20),
    Band("B08", 832.8, 10),
    Band("B8A", 864.7, 20),
    Band("B09", 945.1, 60),
    Band("B10", 1373.5, 60),
    Band("B11", 1613.7, 20),
    Band("B12", 2202.4, 20),
]
_S1 = [Band("VV", None, 10), Band("VH", None, 10)]

BANDS: dict[str, Band] = {b.name: b for b in _S2 + _S1}

# Sentinel-2 band sets in the order eolab uses (spectral order, B8A after B08).
S2_L1C = tuple(b.name for b in _S2)
S2_L2A = tuple(n for n in S2_L1C if n != "B10")  # bottom-of-atmosphere products drop the cirrus band
# The order in which EuroSAT-MS GeoTIFFs (and torchgeo's EuroSAT) store their 13 bands.
EUROSAT_FILE_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")


def canonical_band_name(name: str) -> str:
    """Map spellings such as 'B2', 'b02', 'B8a' to eolab's canonical 'B02', 'B8A'."""
    n = name.strip().upper()
    if n in BANDS:
        return n
    if n.startswith("B") and n[1:].isdigit():
        n = f"B{int(n[1:]):02d}"
        if n in BANDS:
            return n
    raise KeyError(f"unknown band name {name!r}; known: {', '.join(BANDS)}")


def wavelengths(bands: tuple[str, ...] | list[str]) -> list[float | None]:
    return [BANDS[b].wavelength_nm for b in bands]
