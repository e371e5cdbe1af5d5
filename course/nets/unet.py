"""A small U-Net that predicts the noise in an image, written to be read.

    down:    x_t [B, 3, 32, 32] -> conv_in -> ResBlock @32x32 -> @16x16 -> ResBlock+Attn @8x8
    middle:  ResBlock -> Attention -> ResBlock                                      (8x8)
    up:      ResBlocks @8x8 -> @16x16 -> @32x32, each fed the matching down feature map (skip)
    out:     GroupNorm -> SiLU -> conv_out -> predicted noise eps [B, 3, 32, 32]

Every ResBlock also receives the timestep embedding, so one network denoises every noise level.
Self-attention runs only at the lowest resolution, where 8 x 8 = 64 positions make it cheap and
where it lets distant parts of the image agree (one shape, not two halves of different shapes).
The layout follows diffusers' ``UNet2DModel``; the course compares the two in lesson 02.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import timestep_embedding


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 3
    channels: tuple[int, ...] = (32, 64, 64)  # feature channels at 32x32, 16x16, 8x8
    attention: tuple[bool, ...] = (False, False, True)  # self-attention at each resolution
    layers_per_level: int = 1  # ResBlocks per level on the way down (one more on the way up)
    time_dim: int = 128
    groups: int = 8  # GroupNorm groups
    heads: int = 4
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UNetConfig:
        data = dict(data)
        data["channels"] = tuple(data["channels"])
        data["attention"] = tuple(data["attention"])
        return cls(**data)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> Conv, with the timestep added in between, plus a skip connection.

    x [B, C_in, H, W], t_emb [B, time_dim] -> [B, C_out, H, W]
    """

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(t_emb))[:, :, None, None]  # one shift per channel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual.

    x [B, C, H, W] -> [B, C, H, W];  softmax(Q K^T / sqrt(d)) V with Q, K, V = linear(norm(x)).
    """

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, H*W, C]
        q, k, v = self.to_qkv(tokens).chunk(3, dim=-1)
        q, k, v = (z.view(b, h * w, self.heads, c // self.heads).transpose(1, 2)
                   for z in (q, k, v))  # [B, heads, H*W, C/heads]
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        out = self.to_out(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class TinyUNet(nn.Module):
    """eps_theta(x_t, t): predict the noise in x_t [B, C, H, W] at timesteps t [B].

    H and W must be divisible by 2 ** (len(channels) - 1).
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        ch, groups, tdim = config.channels, config.groups, config.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)

        def block(c_in, c_out):
            return ResBlock(c_in, c_out, tdim, groups, config.dropout)

        def attention(c, level):
            return SelfAttention(c, config.heads, groups) if config.attention[level] else None

        # Down path: ResBlocks (and attention) per level, then halve the resolution.
        self.down = nn.ModuleList()
        skip_channels, c = [ch[0]], ch[0]
        for level, c_out in enumerate(ch):
            for _ in range(config.layers_per_level):
                self.down.append(nn.ModuleDict({"res": block(c, c_out)}))
                if attention(c_out, level):
                    self.down[-1]["attn"] = attention(c_out, level)
                c = c_out
                skip_channels.append(c)
            if level < len(ch) - 1:
                self.down.append(nn.ModuleDict({"downsample": nn.Conv2d(c, c, 3, 2, 1)}))
                skip_channels.append(c)

        self.mid_res1 = block(c, c)
        self.mid_attn = SelfAttention(c, config.heads, groups)
        self.mid_res2 = block(c, c)

        # Up path: mirror image, each ResBlock eating one skip; double the resolution per level.
        self.up = nn.ModuleList()
        for level in reversed(range(len(ch))):
            c_out = ch[level]
            for _ in range(config.layers_per_level + 1):
                self.up.append(nn.ModuleDict({"res": block(c + skip_channels.pop(), c_out)}))
                if attention(c_out, level):
                    self.up[-1]["attn"] = attention(c_out, level)
                c = c_out
            if level > 0:
                self.up.append(nn.ModuleDict({"upsample": nn.Conv2d(c, c, 3, padding=1)}))

        self.norm_out = nn.GroupNorm(groups, c)
        self.conv_out = nn.Conv2d(c, config.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start by predicting zero noise: a calm first loss
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        t_emb = self.time_mlp(timestep_embedding(t, self.config.time_dim).to(x.dtype))

        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            if "downsample" in layer:
                h = layer["downsample"](h)
            else:
                h = layer["res"](h, t_emb)
                if "attn" in layer:
                    h = layer["attn"](h)
            skips.append(h)

        h = self.mid_res2(self.mid_attn(self.mid_res1(h, t_emb)), t_emb)

        for layer in self.up:
            if "upsample" in layer:
                h = layer["upsample"](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            else:
                h = layer["res"](torch.cat([h, skips.pop()], dim=1), t_emb)
                if "attn" in layer:
                    h = layer["attn"](h)
        return self.conv_out(F.silu(self.norm_out(h)))
