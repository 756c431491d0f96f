"""Embedding evaluation: frozen features, baselines and probes."""

from .probe import band_stats_features, embed, linear_probe

__all__ = ["band_stats_features", "embed", "linear_probe"]
