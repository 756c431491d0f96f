"""Models: tokenisers and encoders."""

from .vit import SIZES, ViTEncoder, build_encoder

__all__ = ["SIZES", "ViTEncoder", "build_encoder"]
