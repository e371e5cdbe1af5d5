"""Teaching networks, one readable file per component."""

from .embedding import timestep_embedding
from .unet import DownBlock, MidBlock, ResBlock, SelfAttention, TinyUNet, UNetConfig, UpBlock

__all__ = ["DownBlock", "MidBlock", "ResBlock", "SelfAttention", "TinyUNet", "UNetConfig",
           "UpBlock", "timestep_embedding"]
