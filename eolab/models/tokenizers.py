"""Tokenisers: images (B, C, H, W) to token sequences (B, N, D) with positional encodings.

The tokeniser is a part passed to the encoder (timm style), so other token layouts (spectral
groups, time steps) can plug into the same transformer. It records the band names it was built for:
band identity is part of the model, not an accident of channel position.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sincos_2d(grid: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (MAE), shape (grid*grid, dim)."""
    assert dim % 4 == 0, "embedding dim must be divisible by 4 for 2-D sin-cos positions"
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")
    out_y = ys.flatten()[:, None] * omega[None]  # (N, D/4)
    out_x = xs.flatten()[:, None] * omega[None]
    return torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1).float()


class PatchTokenizer(nn.Module):
    """Square patches over all bands, linearly embedded (a strided convolution), plus fixed positions."""

    def __init__(self, bands: tuple[str, ...], img_size: int, patch_size: int, dim: int):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.bands, self.img_size, self.patch_size, self.dim = tuple(bands), img_size, patch_size, dim
        self.grid = img_size // patch_size
        self.proj = nn.Conv2d(len(bands), dim, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("pos", sincos_2d(self.grid, dim), persistent=False)
        # Initialise like a linear layer (MAE): the conv is a per-patch matrix multiply.
        nn.init.xavier_uniform_(self.proj.weight.view(dim, -1))

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    def forward(self, image: Tensor) -> Tensor:
        x = self.proj(image)  # (B, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D), N = (H/p)*(W/p), row-major
        return x + self.pos

    def patchify(self, image: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, p*p*C): the pixel targets of each token, in token order."""
        b, c, h, w = image.shape
        p, g = self.patch_size, self.grid
        x = image.reshape(b, c, g, p, g, p)  # (B, C, gh, p, gw, p)
        x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
        return x.reshape(b, g * g, p * p * c)


def init_weights(module: nn.Module) -> None:
    """MAE/timm initialisation for linear and norm layers."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


