"""Teaching networks, one readable file per component."""

from .attention import CrossAttention
from .embedding import timestep_embedding
from .trace import trace_shapes
from .unet import DownBlock, MidBlock, ResBlock, SelfAttention, TinyUNet, TinyUNetConfig, UpBlock

__all__ = ["CrossAttention", "DownBlock", "MidBlock", "ResBlock", "SelfAttention", "TinyUNet",
           "TinyUNetConfig", "UpBlock", "timestep_embedding", "trace_shapes"]
