"""Proxy tasks (nn.Modules returning dicts of losses) and masking functions."""

from .mae import MaskedAutoencoder
from .masking import MASKS, random_mask

__all__ = ["MASKS", "MaskedAutoencoder", "random_mask"]
