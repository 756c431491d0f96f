"""Masked autoencoder proxy task (He et al., 2022) for multispectral patches, spectral groups
(SatMAE, Cong et al., 2022) and time series.

The task is an ``nn.Module`` that owns the encoder and a light decoder and returns a dict of
losses and diagnostics; it holds no optimiser and logs nothing (the training module does both).
With a group or temporal tokeniser the reconstruction error is also reported per group
(``recon_<group>``), e.g. how well the SWIR group is predicted from the others.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.tokenizers import gather_tokens
from ..models.vit import ViTEncoder
from .common import TokenDecoder, encoder_context, normalize_patches, patch_mse
from .masking import MASKS


class MaskedAutoencoder(nn.Module):
    def __init__(
        self,
        encoder: ViTEncoder,
        mask_ratio: float = 0.75,
        mask: str = "random",
        decoder_dim: int = 64,
        decoder_depth: int = 2,
        decoder_heads: int = 2,
        norm_pix_loss: bool = True,
    ):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"unknown masking scheme {mask!r}; choose one of {sorted(MASKS)}")
        self.encoder, self.mask_ratio, self.mask_fn, self.norm_pix_loss = encoder, mask_ratio, MASKS[mask], norm_pix_loss
        self.decoder = TokenDecoder(encoder.tokenizer, encoder.dim, decoder_dim, decoder_depth, decoder_heads)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        tok = encoder.tokenizer
        self.group_names = [f"g{g}" for g in range(tok.groups)] if tok.groups > 1 else []
        if hasattr(tok, "group_bands"):  # name spectral groups by their first band: recon_B02, recon_B11, ...
            self.group_names = [bands[0] for bands in tok.group_bands]

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return self.reconstruct(batch, generator)[0]

    def reconstruct(self, batch: dict, generator: torch.Generator | None = None) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The losses (as ``forward``), and the encoder's output on the visible tokens (B, 1+K, D)
        with their indices ``keep`` (B, K): what a distillation term on the MAE encoder needs
        (``eolab.tasks.distill.MAEWithTeacher``)."""
        image = batch["image"]  # (B, C, H, W) or (B, T, C, H, W), normalised
        tok = self.encoder.tokenizer
        b, n, groups = image.shape[0], tok.num_tokens, tok.groups
        keep, masked = self.mask_fn(b, n, self.mask_ratio, generator, image.device, groups=groups)  # (B, K), (B, M)

        # Pixels per token (B, N, P): the reconstruction target, and the encoder's input when its
        # tokeniser embeds patches itself (computed once for both).
        patches = tok.patchify(image)
        shared = {"patches": patches} if getattr(tok, "selects_tokens", False) else {}
        latent = self.encoder(image, keep=keep, **shared, **encoder_context(batch))  # (B, 1+K, D): visible tokens only
        # The masked tokens' decoder features (B, M, Dd), before the pixel head: with nothing padded and
        # no per-group errors to report, the head scores them against the target itself (PixelHead).
        feats = self.decoder.predict_masked(latent, keep, masked, self.mask_token, head=False)

        if not tok.padded_targets and not self.group_names:
            # Every token has P real entries and every sample hides M tokens: the mean over tokens
            # is the mean over all entries, computed without the (B, M) per-token errors or pixels,
            # and the head gathers (and standardises) the masked tokens' targets itself.
            return {"loss": self.decoder.pred(feats, patches, rows=masked, normalize=self.norm_pix_loss)}, latent, keep
        cells = n // groups
        target = gather_tokens(patches, masked)  # (B, M, P), zero-padded where a group has fewer bands
        group = masked // cells  # (B, M) group (band group, modality or date) of each masked token
        # Real target entries (B, M, P), or None when no group is zero-padded (skips the masking).
        valid = tok.target_mask[group] if tok.padded_targets else None
        if self.norm_pix_loss:
            target = normalize_patches(target, valid)
        pred = self.decoder.pred(feats)  # (B, M, P): the masked tokens' pixels
        per_token = patch_mse(pred, target, valid)  # (B, M)
        out = {"loss": per_token.mean()}  # every sample hides the same number of tokens
        if self.group_names:
            with torch.no_grad():
                # Error per group: which bands (or dates) are hard to infer from the rest.
                sums = torch.zeros(groups, device=image.device).index_add_(0, group.flatten(), per_token.flatten().float())
                counts = torch.bincount(group.flatten(), minlength=groups).clamp_min(1)
                for name, value in zip(self.group_names, sums / counts, strict=True):
                    out[f"recon_{name}"] = value  # 0 when a group had no masked token in this batch
        return out, latent, keep
