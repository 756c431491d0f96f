"""Attention for the transformer blocks: PyTorch's SDPA, or on a CPU a plain kernel for short sequences.

A masked autoencoder's encoder sees a quarter of the tokens (17 at micro-64, [CLS] included) and a
light decoder is narrow: at such sizes the attention's arithmetic is tiny and its cost is per
(sample, head) overhead. PyTorch's CPU flash kernel pays that overhead in blocks of queries and
keys, forward and (more so) backward; two batched matmuls and a softmax over the whole (L_q, L_k)
score matrix, kept for backward, pay it once per batch. ``attention`` takes the plain kernel where
it measured faster (``SHORT_KEYS``) and SDPA everywhere else: on GPUs (flash, cuDNN), under
autocast or ``torch.compile`` (which fuse it themselves), with dropout, and for long sequences,
where the (L_q, L_k) matrix stops fitting in cache. Both give the same values to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention as TimmAttention
from torch import Tensor

SHORT_KEYS = 96
"""Longest key sequence for the plain kernel (``attention``): one thread fp32, forward and backward
of a (64, 4, 17, 32) block 0.43x and 0.72x SDPA's time in two throw-away timings, of (64, 2, 65, 32) 0.83x and 0.86x; at
(16, 8, 145, 32) 1.24x."""

KERNELS = ("auto", "sdpa")
"""``Attention.kernel``: "auto" takes the plain kernel where ``attention`` would, "sdpa" always SDPA
(what ``python -m benchmarks.throughput --variants attention=sdpa`` times against "auto")."""


class _ShortAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v with the probabilities kept for backward (no recomputation)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        # q (B, H, Lq, hd), k and v (B, H, Lk, hd): views of a fused qkv projection, made contiguous
        # once here so that each matmul is one batched GEMM without copies of its own.
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        p = torch.matmul(q, k.transpose(-2, -1)).mul_(scale).softmax(dim=-1)  # (B, H, Lq, Lk)
        out = torch.matmul(p, v)  # (B, H, Lq, hd)
        ctx.save_for_backward(q, k, v, p, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, p, out = ctx.saved_tensors
        grad = grad.contiguous()  # (B, H, Lq, hd)
        grad_v = torch.matmul(p.transpose(-2, -1), grad)  # (B, H, Lk, hd)
        # Softmax backward: dS = P * (dP - rowsum(dP * P)), and rowsum(dP * P) = rowsum(dO * O).
        delta = (grad * out).sum(-1, keepdim=True)  # (B, H, Lq, 1)
        grad_s = torch.matmul(grad, v.transpose(-2, -1)).sub_(delta).mul_(p).mul_(ctx.scale)  # (B, H, Lq, Lk)
        grad_q = torch.matmul(grad_s, k)  # (B, H, Lq, hd)
        grad_k = torch.matmul(grad_s.transpose(-2, -1), q)  # (B, H, Lk, hd)
        return grad_q, grad_k, grad_v, None


def short_kernel(q: Tensor, k: Tensor, dropout_p: float = 0.0) -> bool:
    """Whether ``attention`` takes the plain kernel for these queries (..., Lq, hd) and keys (..., Lk, hd)."""
    return (
        q.device.type == "cpu"
        and dropout_p == 0.0
        and q.dtype == k.dtype == torch.float32
        and k.shape[-2] <= SHORT_KEYS
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled("cpu")
    )


def attention(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, kernel: str = "auto") -> Tensor:
    """softmax(q k^T / sqrt(hd)) v for q (B, H, Lq, hd) and k, v (B, H, Lk, hd) -> (B, H, Lq, hd);
    no mask. The kernel: see the module's docstring (``kernel="sdpa"`` forces SDPA)."""
    if kernel == "auto" and short_kernel(q, k, dropout_p):
        return _ShortAttention.apply(q, k, v, q.shape[-1] ** -0.5)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


class Attention(TimmAttention):
    """timm's attention layer (same parameters and names, so checkpoints load alike) whose
    unmasked fused path runs ``attention``; masks, causal attention and timm's unfused path are timm's."""

    kernel = "auto"

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal or not self.fused_attn or self.gate is not None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0, kernel=self.kernel)
        x = self.norm(x.transpose(1, 2).reshape(b, n, self.attn_dim))  # (B, N, A)
        return self.proj_drop(self.proj(x))
