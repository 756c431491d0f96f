"""A Vision Transformer encoder for any number of bands, built from timm blocks.

The encoder = a tokeniser (passed in) + a [CLS] token + timm ``Block``s + a final norm. It can run
on a subset of tokens (``keep``), which is what makes masked pre-training cheap: masked tokens
never enter the encoder (MAE).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from .attention import Attention
from .tokenizers import GroupTokenizer, PatchTokenizer, TemporalTokenizer, gather_tokens, init_weights


@dataclass(frozen=True)
class ViTConfig:
    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    patch_size: int = 8
    img_size: int = 64


# Sizes by name, for notebooks and sweeps. Widths/depths follow the DeiT/ViT ladder, shrunk at the
# bottom so that CPU ablations fit in minutes.
SIZES: dict[str, ViTConfig] = {
    "vit_nano": ViTConfig(dim=64, depth=2, heads=2),
    "vit_micro": ViTConfig(dim=128, depth=4, heads=4),
    "vit_mini": ViTConfig(dim=192, depth=6, heads=3),
    "vit_tiny": ViTConfig(dim=192, depth=12, heads=3),
    "vit_small": ViTConfig(dim=384, depth=12, heads=6),
    "vit_base": ViTConfig(dim=768, depth=12, heads=12),
}


POOLS = ("mean", "cls", "mean_std")


class ViTEncoder(nn.Module):
    def __init__(self, tokenizer: nn.Module, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.tokenizer = tokenizer
        self.dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # timm's Block with eolab's attention layer (timm's parameters; SDPA, or a plain kernel for
        # the short sequences of a CPU step: eolab.models.attention).
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias=True, attn_layer=Attention) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.apply(init_weights)
        nn.init.normal_(self.cls_token, std=0.02)

    @property
    def bands(self) -> tuple[str, ...]:
        return self.tokenizer.bands

    def _input_tokens(self, image: Tensor, keep: Tensor | None, hide: tuple[Tensor, Tensor] | None = None,
                      **context) -> Tensor:
        """Tokenised input, the ``keep`` tokens only, with [CLS] prepended: (B, 1+K, D).

        ``hide`` = (mask (B, N) bool, token (D,)): the masked tokens' content is replaced by the
        learned ``token`` (iBOT, SimMIM), keeping their position code: the tokeniser's output for
        an all-zero input, which is its positional (and group, date) encoding plus the projection bias.
        """
        if hide is None and getattr(self.tokenizer, "selects_tokens", False):  # embeds the kept tokens only
            x = self.tokenizer(image, keep=keep, **context)  # (B, K, D) (or (B, N, D)) with positions
        else:
            context.pop("patches", None)  # the tokeniser's own patches of `image` (and of the blank below)
            x = self.tokenizer(image, **context)  # (B, N, D) with positions added
            if hide is not None:
                mask, token = hide
                blank = self.tokenizer(torch.zeros_like(image), **context)  # (B, N, D) positions only
                x = torch.where(mask[..., None], blank + token.to(x.dtype), x)
            if keep is not None:
                x = gather_tokens(x, keep)  # (B, K, D)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+K, D)

    def forward(self, image: Tensor, keep: Tensor | None = None, return_layers: bool = False,
                hide: tuple[Tensor, Tensor] | None = None, **context):
        """Encode ``image`` (B, C, H, W) or a time series (B, T, C, H, W) with ``context`` such as
        ``doy``; with ``keep`` (B, K) only those token indices are encoded; with ``hide`` some
        tokens are replaced by a mask token (see ``_input_tokens``).

        Returns (B, 1+K, D) tokens, [CLS] first; with ``return_layers`` also every block's output.
        """
        x = self._input_tokens(image, keep, hide, **context)  # (B, 1+K, D)
        layers = []
        for block in self.blocks:
            x = block(x)
            layers.append(x)
        x = self.norm(x)
        return (x, layers) if return_layers else x

    @torch.no_grad()
    def tokens(self, image: Tensor, keep: Tensor | None = None, block: int = -1, **context) -> Tensor:
        """Tokens (B, 1+K, D) after block ``block`` (negative counts from the end, as in a list).

        The last block's tokens go through the final norm, as in ``forward``; an intermediate block's
        are returned as they leave the block (the final norm was trained for the last block only), and
        the blocks after it are not run.
        """
        depth = len(self.blocks)
        if not -depth <= block < depth:
            raise ValueError(f"block must lie in [{-depth}, {depth - 1}] for a {depth}-block encoder, got {block}")
        if block % depth == depth - 1:
            return self.forward(image, keep=keep, **context)
        x = self._input_tokens(image, keep, **context)  # (B, 1+K, D)
        for b in self.blocks[: block % depth + 1]:
            x = b(x)
        return x

    @torch.no_grad()
    def embed(self, image: Tensor, pool: str = "mean", keep: Tensor | None = None, block: int = -1,
              **context) -> Tensor:
        """One vector per image from the final tokens (B, 1+N, D) (or only the ``keep`` tokens, e.g.
        one modality's; or those of an intermediate ``block``, see ``tokens``):

        "mean": mean of patch tokens (D); "cls": the [CLS] token (D); "mean_std": mean and standard
        deviation of patch tokens over space (2D), statistics pooling, which keeps how much the scene
        varies within the image (texture, heterogeneity) that a mean averages away.
        """
        return pool_tokens(self.tokens(image, keep=keep, block=block, **context), pool)


def pool_tokens(x: Tensor, pool: str) -> Tensor:
    """Pool encoder output (B, 1+N, D), [CLS] first, into one vector per sample (see ``embed``)."""
    patches = x[:, 1:]  # (B, N, D)
    if pool == "mean":
        return patches.mean(1)
    if pool == "cls":
        return x[:, 0]
    if pool == "mean_std":
        return torch.cat([patches.mean(1), patches.std(1)], dim=1)  # (B, 2D)
    raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")


TOKENIZERS = ("patch", "groups", "temporal")


def build_tokenizer(kind: str, bands: tuple[str, ...], img_size: int, patch_size: int, dim: int,
                    groups: tuple[tuple[str, ...], ...] = (), num_dates: int = 1) -> nn.Module:
    """Tokeniser by name: "patch" (all bands), "groups" (one token per band group and patch),
    "temporal" (one token per date and patch)."""
    if kind == "patch":
        return PatchTokenizer(bands, img_size, patch_size, dim)
    if kind == "groups":
        return GroupTokenizer(bands, groups, img_size, patch_size, dim)
    if kind == "temporal":
        return TemporalTokenizer(bands, num_dates, img_size, patch_size, dim)
    raise ValueError(f"unknown tokenizer {kind!r}; choose one of {TOKENIZERS}")


def build_encoder(size: str, bands: tuple[str, ...], img_size: int = 64, patch_size: int = 8, tokenizer: str = "patch",
                  groups: tuple[tuple[str, ...], ...] = (), num_dates: int = 1) -> ViTEncoder:
    """Encoder by size name, for the given band names (and band groups or number of dates)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    cfg = SIZES[size]
    tok = build_tokenizer(tokenizer, tuple(bands), img_size, patch_size, cfg.dim, groups, num_dates)
    return ViTEncoder(tok, cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)


def encoder_config(size: str, bands, img_size: int, patch_size: int, tokenizer: str = "patch",
                   groups: tuple[tuple[str, ...], ...] = (), num_dates: int = 1) -> dict:
    """Plain-data description of an encoder, stored in checkpoints to rebuild it."""
    return {"size": size, "bands": list(bands), "img_size": img_size, "patch_size": patch_size,
            "tokenizer": tokenizer, "groups": [list(g) for g in groups], "num_dates": num_dates,
            **{k: v for k, v in asdict(SIZES[size]).items() if k not in ("patch_size", "img_size")}}
