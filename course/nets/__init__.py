"""Teaching networks, one readable file per component."""

from .embedding import timestep_embedding
from .unet import TinyUNet, UNetConfig

__all__ = ["TinyUNet", "UNetConfig", "timestep_embedding"]
