"""A small U-Net that predicts the noise in an image, written to be read.

    x_t [B, 3, 32, 32] -> conv_in
    down:  DownBlock @32x32 -> DownBlock @16x16 -> DownBlock + attention @8x8
    mid:   ResBlock -> SelfAttention -> ResBlock                              (8x8)
    up:    UpBlock + attention @8x8 -> UpBlock @16x16 -> UpBlock @32x32, each ResBlock fed one
           feature map saved on the way down (a skip connection, concatenated on the channels)
    out:   GroupNorm -> SiLU -> conv_out -> predicted noise eps [B, 3, 32, 32]

Every ResBlock also receives the timestep embedding, so one network denoises every noise level.
Self-attention runs only at the lowest resolution, where 8 x 8 = 64 positions make it cheap and
where it lets distant parts of the image agree (one shape, not two halves of different shapes).
The layout follows diffusers' ``UNet2DModel`` (``ResnetBlock2D``, ``DownBlock2D`` /
``AttnDownBlock2D``, ``UNetMidBlock2D``, ``UpBlock2D`` / ``AttnUpBlock2D``); lesson 02 compares
the two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import timestep_embedding


@dataclass(frozen=True)
class TinyUNetConfig:
    """Everything that decides the network's shape; stored with every checkpoint."""

    in_channels: int = 3
    channels: tuple[int, ...] = (32, 64, 64)  # feature channels at 32x32, 16x16, 8x8
    attention: tuple[bool, ...] = (False, False, True)  # self-attention at each resolution
    layers_per_level: int = 1  # ResBlocks per level on the way down (one more on the way up)
    time_dim: int = 128
    groups: int = 8  # GroupNorm groups
    heads: int = 4  # attention heads (the middle block always has attention)
    dropout: float = 0.0

    def __post_init__(self):
        # Lists (from JSON, or typed by hand) become tuples: the config stays hashable and frozen.
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "attention", tuple(bool(a) for a in self.attention))
        if not self.channels:
            raise ValueError("channels must name at least one level, e.g. (32, 64, 64)")
        if len(self.attention) != len(self.channels):
            raise ValueError(f"attention has {len(self.attention)} entries but channels has "
                             f"{len(self.channels)}: give one True/False per level")
        if min(self.channels) < 1 or self.in_channels < 1:
            raise ValueError(f"channel counts must be positive, got in_channels="
                             f"{self.in_channels}, channels={self.channels}")
        if self.layers_per_level < 1:
            raise ValueError(f"layers_per_level must be at least 1, got {self.layers_per_level}")
        if self.time_dim < 2 or self.time_dim % 2:
            raise ValueError(f"time_dim must be even and positive (half cosines, half sines), "
                             f"got {self.time_dim}")
        if self.groups < 1:
            raise ValueError(f"groups must be at least 1, got {self.groups}")
        bad = [c for c in self.channels if c % self.groups]
        if bad:
            raise ValueError(f"groups={self.groups} must divide every channel count for "
                             f"GroupNorm, but not {bad} (channels={self.channels})")
        # The middle block always attends, at the last level's width.
        attended = {c for c, a in zip(self.channels, self.attention) if a} | {self.channels[-1]}
        bad = sorted(c for c in attended if c % self.heads)
        if self.heads < 1 or bad:
            raise ValueError(f"heads={self.heads} must divide the channels of every level with "
                             f"attention (and of the middle block), but not {bad}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TinyUNetConfig:
        return cls(**data)


class ResBlock(nn.Module):
    """A residual block that also hears the timestep.

        h   = Conv3x3( SiLU( GroupNorm(x) ) )
        h   = h + Linear( SiLU(t_emb) )          one shift per channel, the same at every pixel
        h   = Conv3x3( Dropout( SiLU( GroupNorm(h) ) ) )
        out = skip(x) + h                        skip: a 1x1 conv when C_in != C_out, else x

    x [B, C_in, H, W], t_emb [B, time_dim] -> [B, C_out, H, W]. This is diffusers'
    ``ResnetBlock2D`` with its defaults (``time_embedding_norm="default"``,
    ``output_scale_factor=1``).
    """

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int, dropout: float = 0.0):
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
        h = h + self.time_proj(F.silu(t_emb))[:, :, None, None]  # [B, C_out] -> [B, C_out, 1, 1]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual.

        tokens  = GroupNorm(x) as H*W vectors of C channels
        Q, K, V = tokens W_q, tokens W_k, tokens W_v            split into heads of d = C / heads
        out     = x + W_o softmax(Q K^T / sqrt(d)) V

    x [B, C, H, W] -> [B, C, H, W]. Every position looks at every other: the cost grows with
    (H*W)^2, which is why the U-Net only attends at its lowest resolution.
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
                   for z in (q, k, v))  # [B, heads, H*W, d]
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(Q K^T / sqrt(d)) V
        out = self.to_out(out.transpose(1, 2).reshape(b, h * w, c))  # heads joined, then W_o
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour copy, then a 3x3 conv to smooth the blocks."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """One level on the way down: ResBlocks (each followed by attention, if asked), then halve.

    Returns the result and every intermediate feature map, which the up path takes back as
    skip connections: one per ResBlock, plus the halved map when there is a downsample.
    """

    def __init__(self, c_in: int, c_out: int, layers: int, time_dim: int, groups: int,
                 heads: int, attention: bool, dropout: float, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResBlock(c_in if i == 0 else c_out, c_out, time_dim, groups, dropout)
            for i in range(layers))
        self.attentions = nn.ModuleList(
            SelfAttention(c_out, heads, groups) if attention else nn.Identity()
            for _ in range(layers))
        # A stride-2 conv halves H and W: [B, C, H, W] -> [B, C, H/2, W/2].
        self.downsample = nn.Conv2d(c_out, c_out, 3, stride=2, padding=1) if downsample else None

    def forward(self, h: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, list]:
        skips = []
        for res, attn in zip(self.resnets, self.attentions):
            h = attn(res(h, t_emb))
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h)
            skips.append(h)
        return h, skips


class MidBlock(nn.Module):
    """The bottom of the U, at the lowest resolution: ResBlock -> SelfAttention -> ResBlock."""

    def __init__(self, channels: int, time_dim: int, groups: int, heads: int, dropout: float):
        super().__init__()
        self.res1 = ResBlock(channels, channels, time_dim, groups, dropout)
        self.attn = SelfAttention(channels, heads, groups)
        self.res2 = ResBlock(channels, channels, time_dim, groups, dropout)

    def forward(self, h: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(h, t_emb)), t_emb)


class UpBlock(nn.Module):
    """One level on the way up: each ResBlock eats one skip, concatenated on the channels.

        h = ResBlock( concat([h, skip], dim=channels) )     then attention, if asked

    ``skip_channels`` lists the channels of the skips in the order the down path made them;
    they are consumed last-made first. Ends with an upsample, except at the top level.
    """

    def __init__(self, c_in: int, skip_channels: list[int], c_out: int, time_dim: int,
                 groups: int, heads: int, attention: bool, dropout: float, upsample: bool):
        super().__init__()
        ins = [c_in] + [c_out] * (len(skip_channels) - 1)
        self.resnets = nn.ModuleList(
            ResBlock(c + s, c_out, time_dim, groups, dropout)
            for c, s in zip(ins, reversed(skip_channels)))
        self.attentions = nn.ModuleList(
            SelfAttention(c_out, heads, groups) if attention else nn.Identity()
            for _ in skip_channels)
        self.upsample = Upsample(c_out) if upsample else None

    def forward(self, h: torch.Tensor, skips: list, t_emb: torch.Tensor) -> torch.Tensor:
        for res, attn, skip in zip(self.resnets, self.attentions, reversed(skips)):
            h = attn(res(torch.cat([h, skip], dim=1), t_emb))
        if self.upsample is not None:
            h = self.upsample(h)
        return h


class TinyUNet(nn.Module):
    """eps_theta(x_t, t): predict the noise in x_t [B, C, H, W] at timesteps t [B].

    H and W must be divisible by 2 ** (len(channels) - 1).
    """

    def __init__(self, config: TinyUNetConfig = TinyUNetConfig()):
        super().__init__()
        self.config = config
        ch, tdim, n = config.channels, config.time_dim, config.layers_per_level
        common = dict(time_dim=tdim, groups=config.groups, heads=config.heads,
                      dropout=config.dropout)
        # t -> sinusoidal embedding (fixed) -> a small MLP (learned), shared by every ResBlock
        self.time_mlp = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)

        # Down path: one DownBlock per level; all but the last halve the resolution.
        self.down = nn.ModuleList()
        skip_channels, c = [ch[0]], ch[0]  # conv_in's output is the first skip
        for level, c_out in enumerate(ch):
            last = level == len(ch) - 1
            self.down.append(DownBlock(c, c_out, n, attention=config.attention[level],
                                       downsample=not last, **common))
            skip_channels += [c_out] * (n if last else n + 1)
            c = c_out

        self.mid = MidBlock(c, **common)

        # Up path: the mirror image, one more ResBlock per level, so that every skip is used.
        self.up = nn.ModuleList()
        for level in reversed(range(len(ch))):
            level_skips, skip_channels = skip_channels[-(n + 1):], skip_channels[:-(n + 1)]
            self.up.append(UpBlock(c, level_skips, ch[level], attention=config.attention[level],
                                   upsample=level > 0, **common))
            c = ch[level]

        self.norm_out = nn.GroupNorm(config.groups, c)
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
        for block in self.down:
            h, block_skips = block(h, t_emb)
            skips += block_skips

        h = self.mid(h, t_emb)

        for block in self.up:
            n = len(block.resnets)
            h = block(h, skips[-n:], t_emb)
            del skips[-n:]
        return self.conv_out(F.silu(self.norm_out(h)))
