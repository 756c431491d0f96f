"""Weighted combinations of proxy tasks that share one encoder (e.g. masked reconstruction plus
contrast, as in CMAE or CROMA)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Combined(nn.Module):
    """Sum of ``weight * loss`` of each part; every part's outputs are reported as ``<name>/<key>``.

    The parts must share the encoder instance (``parts[...].encoder is encoder``): the combination
    trains one representation, not several. Shared parameters appear once in ``parameters()``.
    """

    def __init__(self, parts: dict[str, nn.Module], weights: dict[str, float]):
        super().__init__()
        if set(parts) != set(weights):
            raise ValueError(f"weights {sorted(weights)} must name exactly the parts {sorted(parts)}")
        encoders = {id(p.encoder) for p in parts.values()}
        if len(encoders) != 1:
            raise ValueError("combined tasks must share one encoder")
        self.parts = nn.ModuleDict(parts)
        self.weights = dict(weights)
        self.encoder = next(iter(parts.values())).encoder

    def after_optimizer_step(self, step: int, max_steps: int) -> None:
        """Pass the optimiser step on to every part that keeps a teacher (see ``eolab.tasks.latent``)."""
        for part in self.parts.values():
            if hasattr(part, "after_optimizer_step"):
                part.after_optimizer_step(step, max_steps)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        total = None
        for name, part in self.parts.items():
            result = part(batch, generator)
            term = self.weights[name] * result["loss"]
            total = term if total is None else total + term
            out.update({f"{name}/{k}": v.detach() for k, v in result.items()})
        out["loss"] = total
        return out
