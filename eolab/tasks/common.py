"""Small parts that several proxy tasks share."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..models.attention import Attention, attention
from ..models.tokenizers import flat_rows, gather_tokens, init_weights, sincos_2d

CONTEXT_KEYS = ("doy",)
"""Batch fields, besides the image, that an encoder's tokeniser may need (day of year of dates)."""


def encoder_context(batch: dict) -> dict:
    """The batch's tokeniser inputs besides the image (e.g. ``doy`` for a time series)."""
    return {k: batch[k] for k in CONTEXT_KEYS if k in batch}


class DecoderBlock(Block):
    """timm's transformer ``Block`` that can also be read at some tokens only.

    ``block(x, rows=rows)`` with token indices ``rows`` (B, M) gives ``gather_tokens(block(x), rows)``
    (B, M, D) without computing the other tokens' queries, attention outputs and MLP; every token
    still gives its keys and values. A decoder's last block needs the masked tokens only (a quarter
    fewer rows at MAE's 75% mask; the step 1.05x on one CPU thread at micro-64). Parameters and their
    names are ``Block``'s, so checkpoints do not change."""

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False, rows: Tensor | None = None) -> Tensor:
        if rows is None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        if attn_mask is not None or is_causal:
            raise ValueError("DecoderBlock: rows= reads a block without attention masks")
        attn = self.attn
        b, n, _ = x.shape
        m, h, hd, a = rows.shape[1], attn.num_heads, attn.head_dim, attn.attn_dim
        y = self.norm1(x)  # (B, L, D)
        y_rows = gather_tokens(y, rows)  # (B, M, D)
        weight, bias = attn.qkv.weight, attn.qkv.bias  # (3A, D), (3A,): rows q, then k, then v
        q = F.linear(y_rows, weight[:a], None if bias is None else bias[:a])  # (B, M, A)
        kv = F.linear(y, weight[a:], None if bias is None else bias[a:])  # (B, L, 2A)
        q = attn.q_norm(q.view(b, m, h, hd).transpose(1, 2))  # (B, H, M, hd)
        k, v = kv.view(b, n, 2, h, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        k = attn.k_norm(k)
        if attn.fused_attn:
            o = attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0, kernel=getattr(attn, "kernel", "auto"))
        else:
            o = attn.attn_drop((q * attn.scale @ k.transpose(-2, -1)).softmax(dim=-1)) @ v  # (B, H, M, hd)
        o = attn.norm(o.transpose(1, 2).reshape(b, m, a))  # (B, M, A)
        if attn.gate is not None:
            o = o * attn.gate(y_rows).sigmoid()
        o = attn.proj_drop(attn.proj(o))  # (B, M, D)
        x = gather_tokens(x, rows) + self.drop_path1(self.ls1(o))  # (B, M, D)
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class _LinearMeanSquaredError(torch.autograd.Function):
    """mean((x W^T + b - target)^2) with one (R, P) tensor for the head's output and the loss.

    The plain form allocates and passes over three of them (the head's output, the difference, its
    scaled copy as the gradient), 10 MB each at micro-64, beyond a CPU's L2 cache. Here the output
    is computed chunk by chunk of rows, and while a chunk is in cache it becomes its error in place
    and is reduced; the chunk's target is gathered (``index``) and standardised (``normalize``) there
    too, so the masked tokens' target never exists as a whole (two more (R, P) tensors that a fresh
    allocation page-faults in every step). Backward applies the loss's scale to the small (R, Dd) and
    (P, Dd) products instead of the (R, P) one. The same matmuls as ``nn.Linear``, so FLOP counts do
    not change; a row's values do not depend on the chunk it is in (the MAE step at micro-64 gave the
    same losses and parameters, bit for bit, as with one unchunked matmul and a gathered target)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, target: Tensor, index: Tensor | None,
                normalize: bool, chunk: int) -> Tensor:
        # x (R, Dd), weight (P, Dd), bias (P,); target (R, P), or (S, P) read at rows ``index`` (R,);
        # chunk: rows per step of the reduction
        diff = x.new_empty(x.shape[0], weight.shape[0])  # (R, P): the prediction, then in place its error
        weight_t = weight.t()
        total = x.new_zeros(())
        for s in range(0, diff.shape[0], chunk):
            error = torch.addmm(bias, x[s : s + chunk], weight_t, out=diff[s : s + chunk])
            goal = target[s : s + chunk] if index is None else target.index_select(0, index[s : s + chunk])
            if normalize:
                goal = normalize_patches(goal)
            error = error.sub_(goal).view(-1)
            total += torch.dot(error, error)
        ctx.save_for_backward(x, weight, diff)
        return total / diff.numel()

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, diff = ctx.saved_tensors
        scale = grad * (2.0 / diff.numel())  # d loss / d pred = scale * diff, never formed at (R, P)
        need_x, need_w, need_b, need_t = ctx.needs_input_grad[:4]
        grad_x = (diff @ weight).mul_(scale) if need_x else None  # (R, Dd)
        grad_w = (diff.t() @ x).mul_(scale) if need_w else None  # (P, Dd)
        grad_b = diff.sum(0).mul_(scale) if need_b else None  # (P,)
        grad_t = diff * -scale if need_t else None  # (R, P); the head routes gathered targets elsewhere
        return grad_x, grad_w, grad_b, grad_t, None, None, None


class PixelHead(nn.Linear):
    """The decoder's linear head to each token's pixels, which can also score its prediction.

    ``head(x)``: features (..., Dd) -> pixels (..., P). ``head(x, target)``: the mean squared error of
    those pixels against ``target`` (..., P), a scalar, the value of ``F.mse_loss(head(x), target)``.
    ``head(x, target, rows=rows)`` with features (B, M, Dd), token indices ``rows`` (B, M) and pixels
    of every token ``target`` (B, N, P): the error against ``gather_tokens(target, rows)`` (the
    masked tokens' pixels, gathered inside the loss); ``normalize=True``: against
    ``normalize_patches`` of those (MAE's norm-pix target).
    On a CPU, eagerly in fp32, without the pixels' tensor written and read three times, nor the
    target's gathered and standardised copies (``_LinearMeanSquaredError``); elsewhere (a GPU,
    autocast, ``torch.compile``, a head without bias) the plain ``F.mse_loss``, which cuBLAS,
    autocast's fp32 loss and inductor's fusion serve."""

    def forward(self, x: Tensor, target: Tensor | None = None, rows: Tensor | None = None,
                normalize: bool = False) -> Tensor:
        if target is None:
            return super().forward(x)
        if rows is None:
            matches = target.shape[:-1] == x.shape[:-1]  # (..., P) against (..., Dd)
        else:  # (B, N, P) read at rows (B, M) against (B, M, Dd)
            matches = rows.shape == x.shape[:-1] and target.dim() == 3 and target.shape[0] == x.shape[0]
        if not matches or target.shape[-1] != self.out_features:
            raise ValueError(
                f"PixelHead: features {tuple(x.shape)} through a head to {self.out_features} pixels "
                f"do not match target {tuple(target.shape)}" + ("" if rows is None else f" at rows {tuple(rows.shape)}")
            )
        plain = (
            torch.compiler.is_compiling()
            or x.device.type != "cpu"
            or torch.is_autocast_enabled(x.device.type)
            or self.bias is None
            or not (x.dtype == target.dtype == self.weight.dtype == torch.float32)
            or (target.requires_grad and (rows is not None or normalize))
        )
        if plain:
            goal = target if rows is None else gather_tokens(target, rows)  # (B, M, P)
            return F.mse_loss(super().forward(x), normalize_patches(goal) if normalize else goal)
        chunk = max(1, (1 << 17) // self.out_features)  # chunks of about 128k outputs: 0.5 MB
        flat_x = x.reshape(-1, x.shape[-1])  # (R, Dd)
        flat_t = target.reshape(-1, target.shape[-1])  # (R, P), or (B*N, P) read at rows
        index = None if rows is None else flat_rows(rows, target.shape[1])  # (R,) rows of flat_t
        return _LinearMeanSquaredError.apply(flat_x, self.weight, self.bias, flat_t, index, normalize, chunk)


class TokenDecoder(nn.Module):
    """A light transformer over a full token layout (G x grid*grid) predicting each token's pixels.

    Shared by the masked autoencoder (mask tokens fill the hidden positions), the denoiser (every
    position is visible) and, with ``out_dim`` the encoder's width, the latent predictor of
    ``eolab.tasks.latent`` (which predicts latents rather than pixels). Positions: 2-D sin-cos per
    cell plus a learned embedding per group, so the decoder knows which spectral group, modality or
    date a token belongs to.
    """

    def __init__(self, tokenizer: nn.Module, in_dim: int, dim: int, depth: int, heads: int, out_dim: int | None = None):
        super().__init__()
        self.groups, self.cells = tokenizer.groups, tokenizer.grid**2
        self.embed = nn.Linear(in_dim, dim)
        self.register_buffer("pos", sincos_2d(tokenizer.grid, dim), persistent=False)  # (N, Dd)
        self.group_embed = nn.Parameter(torch.zeros(self.groups, dim))
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, 4.0, qkv_bias=True, attn_layer=Attention) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pred = PixelHead(dim, out_dim or tokenizer.target_mask.shape[1])  # pixels of a token by default
        for m in (self.embed, self.blocks, self.norm, self.pred):
            m.apply(init_weights)
        nn.init.normal_(self.group_embed, std=0.02)

    def position(self) -> Tensor:
        """(G*N, Dd) encoding of every token position in the layout, group-major."""
        return (self.group_embed[:, None] + self.pos[None]).flatten(0, 1)

    def forward(self, x: Tensor, select: Tensor | None = None, head: bool = True) -> Tensor:
        """(B, 1+G*N, Dd) tokens, [CLS] first, positions added -> (B, G*N, P) pixel predictions,
        or only those of the token indices ``select`` (B, M): the masked autoencoder needs the
        masked tokens' pixels only, and predicting the others is a quarter of its step on a CPU.
        ``head=False`` stops before the head ``pred``: the normed features (B, M or G*N, Dd), for a
        loss that calls the head with its target (``PixelHead``)."""
        if select is None or not len(self.blocks):
            for block in self.blocks:
                x = block(x)
            x = x[:, 1:]  # (B, G*N, Dd)
            x = self.norm(x if select is None else gather_tokens(x, select))
        else:
            for block in self.blocks[:-1]:
                x = block(x)
            # The last block is read at the selected tokens only: every token gives keys and values,
            # but queries, attention output and MLP run on those rows (DecoderBlock).
            x = self.norm(self.blocks[-1](x, rows=select + 1))  # (B, M, Dd); +1 skips [CLS]
        return self.pred(x) if head else x

    def predict_masked(self, latent: Tensor, keep: Tensor, masked: Tensor, mask_token: Tensor, head: bool = True) -> Tensor:
        """Predictions (B, M, out) for the ``masked`` tokens (B, M) from the encoder's output on the
        ``keep`` tokens (B, 1+K, D), [CLS] first: visible latents and ``mask_token`` (1, 1, Dd) are
        scattered back to their layout positions, positions added, and the decoder run over all.
        ``head=False``: their features before the head (B, M, Dd), as ``forward``."""
        x = self.embed(latent)  # (B, 1+K, Dd)
        b, n = x.shape[0], self.groups * self.cells
        # Under autocast the projected latents are bf16/fp16 while the parameter is fp32: match them.
        full = mask_token.to(x.dtype).expand(b, n, -1).clone()  # (B, N, Dd)
        full.scatter_(1, keep[..., None].expand(-1, -1, x.shape[-1]), x[:, 1:])
        full = full + self.position()
        return self(torch.cat([x[:, :1], full], dim=1), select=masked, head=head)  # (B, M, out): masked tokens only


def patch_mse(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean squared error per token over its real target entries: (B, N, P) x2 -> (B, N).

    ``valid`` ([B,] N, P) marks real entries where groups of fewer bands are zero-padded; None when
    every entry is real (the common case, which then costs no masking).
    """
    if valid is None:
        if torch.compiler.is_compiling():  # inductor fuses the plain form with its neighbours (1.1x compiled)
            return ((pred - target) ** 2).mean(-1)
        return F.mse_loss(pred, target, reduction="none").mean(-1)  # one kernel each way, eagerly
    valid = valid.to(pred.dtype)
    return ((pred - target) ** 2 * valid).sum(-1) / valid.sum(-1)


def normalize_patches(target: Tensor, valid: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Standardise each token's target over its real entries (MAE's norm-pix loss): the target
    becomes local structure rather than absolute brightness. Padding stays zero."""
    if valid is None:
        # (x - mean) / sqrt(var_unbiased + eps) as one layer norm (biased variance, one fused pass;
        # torch.var measured 5x slower on CPU): var_unbiased = var * P / (P - 1), rescaled exactly,
        # the rescaling as the norm's weight (in its pass, not one more over the target).
        p = target.shape[-1]
        scale = torch.full((p,), math.sqrt((p - 1) / p), dtype=target.dtype, device=target.device)
        return F.layer_norm(target, (p,), weight=scale, eps=eps * (p - 1) / p)
    v = valid.to(target.dtype)
    count = v.sum(-1, keepdim=True)
    mean = (target * v).sum(-1, keepdim=True) / count
    var = (((target - mean) * v) ** 2).sum(-1, keepdim=True) / (count - 1).clamp_min(1)
    return (target - mean) / (var + eps).sqrt() * v
