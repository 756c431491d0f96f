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
from torch.utils.flop_counter import (
    FlopCounterMode,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

aten = torch.ops.aten

# torch's counter knows the CUDA attention kernels but not the CPU one (torch 2.14): without these
# two entries fused attention on CPU counts as zero FLOPs (found by ``analytic_training_flops``).
CPU_ATTENTION_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
    aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad_out, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad_out, q, k, v),
}


def training_flops(task: nn.Module, batch: dict, seed: int = 0) -> int:
    """FLOPs of one forward and backward pass of ``task`` on ``batch`` (the optimiser's update is
    elementwise and not counted). Restores the task's gradients and RNG state afterwards."""
    rng = torch.random.get_rng_state()
    saved = {n: p.grad for n, p in task.named_parameters()}
    was_training = task.training
    momentum = {n: b.clone() for n, b in task.state_dict().items()}  # a momentum encoder updates in forward
    task.train()
    try:
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
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


def non_embedding_params(task: nn.Module) -> dict[str, int]:
    """Parameters inside transformer blocks, the N of scaling laws (Kaplan et al. 2020, arXiv:2001.08361):
    patch projections, [CLS]/mask tokens, group embeddings and the pixel-prediction head are left out;
    they grow with bands and patch size, not with the model's capacity."""
    def blocks(module: nn.Module) -> int:
        return sum(p.numel() for n, p in module.named_parameters() if ".blocks." in f".{n}" and p.requires_grad)
    counts = {"task_params_nonembed": blocks(task)}
    if hasattr(task, "encoder"):
        counts["encoder_params_nonembed"] = blocks(task.encoder)
    return counts


def analytic_training_flops(task: nn.Module, batch: dict, seed: int = 0) -> int:
    """FLOPs of one training step by the textbook rule, from the token counts the step really uses:
    6 x parameters x tokens for every transformer block and projection (forward 2, backward 4; Kaplan
    et al. 2020), plus 12 x tokens^2 x width per attention layer (QK^T and AV). An independent check
    of ``training_flops``: it reads only shapes, so a miscount there (or an op run twice) shows up.

    Momentum (teacher, target) encoders run without gradients: what runs with autograd off is counted
    as a forward pass only (2 x parameters x tokens, 4 x tokens^2 x width), so the check is tight for
    the tasks with a teacher too (MoCo, latent masked modelling, DINO, MAE with a teacher).
    """
    total = 0

    def block_hook(module: nn.Module, args: tuple, kwargs: dict, _out) -> None:
        nonlocal total
        b, t, d = args[0].shape  # (B, T, D) tokens entering the block
        weights = sum(p.numel() for p in module.parameters() if p.ndim >= 2)  # biases and norms are elementwise
        # A block read at some tokens only (``DecoderBlock(x, rows=...)``, M of T): keys and values
        # for all T, the queries, attention outputs and MLP for the M.
        rows = kwargs.get("rows")
        m, kv = t, 0
        if rows is not None:
            m, qkv = rows.shape[1], module.attn.qkv.weight  # qkv (3A, D): queries, keys, values
            kv = (qkv.shape[0] // 3) * 2 * qkv.shape[1]  # the key and value weights, run on all T
        trained = torch.is_grad_enabled()  # a teacher's block runs under no_grad: forward only
        total += (6 if trained else 2) * b * ((weights - kv) * m + kv * t) + (12 if trained else 4) * b * m * t * d

    def layer_hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):  # rows in, read from the input: a head may return its loss instead
            positions = args[0].numel() // module.in_features
        else:
            positions = out.numel() // module.weight.shape[0]  # pixels produced (Conv)
        # The backward pass needs the input's gradient only where the input came from the network:
        # the patch projection of the image has the weight's gradient alone (forward 2 + backward 2).
        per_weight = 6 if args[0].requires_grad else 4
        if not torch.is_grad_enabled():  # a teacher's layer: forward only
            per_weight = 2
        total += per_weight * module.weight.numel() * positions

    def embed_hook(module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        # A patch tokeniser that embeds by patchify + matmul runs its projection's weight without
        # calling the layer (so layer_hook does not see it): count it on the tokens it embedded.
        nonlocal total
        if getattr(module, "embed_as", "conv") != "matmul":
            return  # the convolution ran as a layer: counted by layer_hook
        positions = out.numel() // out.shape[-1]  # tokens embedded: (B, K, D) -> B x K
        total += (4 if torch.is_grad_enabled() else 2) * module.proj.weight.numel() * positions

    inside_blocks = {id(m) for blk in task.modules() if _is_block(blk) for m in blk.modules()}
    handles = [m.register_forward_hook(block_hook, with_kwargs=True) for m in task.modules() if _is_block(m)]
    handles += [m.register_forward_hook(embed_hook) for m in task.modules() if getattr(m, "selects_tokens", False)]
    handles += [m.register_forward_hook(layer_hook) for m in task.modules()
                if isinstance(m, (nn.Linear, nn.Conv2d)) and id(m) not in inside_blocks]
    rng = torch.random.get_rng_state()
    momentum = {n: b.clone() for n, b in task.state_dict().items()}
    try:  # with autograd on, so that requires_grad tells which inputs come from the network; no backward
        task(batch, generator=torch.Generator().manual_seed(seed))
    finally:
        for h in handles:
            h.remove()
        task.load_state_dict(momentum)
        torch.random.set_rng_state(rng)
    return total


def _is_block(module: nn.Module) -> bool:
    """A transformer block (timm's Block and its kind): attention and MLP sub-modules."""
    return hasattr(module, "attn") and hasattr(module, "mlp")
