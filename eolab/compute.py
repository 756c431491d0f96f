"""Compute accounting: training FLOPs of one step, counted from the model itself.

Objectives differ a lot in cost per step: a masked autoencoder encodes a quarter of the tokens, a
contrastive task encodes every token twice (three or four times with a momentum encoder). Comparing
them "per epoch" compares different budgets, so eolab counts the FLOPs of one training step with
torch's FLOP counter (forward and backward, every matmul and convolution, as the step really runs)
and can give every objective the same number of training FLOPs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def training_flops(task: nn.Module, batch: dict, seed: int = 0) -> int:
    """FLOPs of one forward and backward pass of ``task`` on ``batch`` (the optimiser's update is
    elementwise and not counted). Restores the task's gradients and RNG state afterwards."""
    rng = torch.random.get_rng_state()
    saved = {n: p.grad for n, p in task.named_parameters()}
    was_training = task.training
    momentum = {n: b.clone() for n, b in task.state_dict().items()}  # a momentum encoder updates in forward
    task.train()
    try:
        with FlopCounterMode(display=False) as counter:
            task(batch, generator=torch.Generator().manual_seed(seed))["loss"].backward()
        return int(counter.get_total_flops())
    finally:
        task.load_state_dict(momentum)
        for n, p in task.named_parameters():
            p.grad = saved[n]
        task.train(was_training)
        torch.random.set_rng_state(rng)


def parameter_count(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
