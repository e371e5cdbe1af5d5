"""Tiny Stable Diffusion: the four parts of a genuine ``StableDiffusionPipeline``, sized for 32x32.

Stable Diffusion (Rombach et al. 2022) denoises in the latent space of an autoencoder, guided by
a text encoder through cross-attention. Every part here is the library's own class; only the sizes
differ from SD 1.5 (in brackets):

================  ==============================================  ============================
part              here                                            SD 1.5
================  ==============================================  ============================
image             32x32x3                                         512x512x3
AutoencoderKL     (16, 32) channels, f = 2: latents 16x16x4;      f = 8: latents 64x64x4; 84M
                  0.16M parameters
CLIPTokenizer     565 tokens (vocab.py), 16 per prompt            49,408 tokens, 77 per prompt
CLIPTextModel     2 layers, width 64; 0.10M parameters            12 layers, width 768; 123M
UNet2D...Model    (32, 64, 64), cross-attention at 8x8 and 4x4;   (320, 640, 1280, 1280); 860M
                  1.69M parameters
scheduler         DDIM, zero terminal SNR, v-prediction           PNDM, epsilon prediction
================  ==============================================  ============================

Why f = 2: the shapes are 10-15 pixels across; an f = 4 autoencoder of this size blurs their
corners enough that its own reconstructions cap prompt adherence near 97% (a square read as a
circle), while f = 2 keeps them at ~99.6%.

Why zero terminal SNR and v-prediction (Lin et al. 2023): where the shape goes is decided in the
first, noisiest steps. SD's schedule leaves some signal at t = T, so the model is never trained on
pure noise, and an epsilon-predicting model gets almost no gradient for the layout there: trained
that way on this world, it placed shapes at random. With alpha_bar_T = 0 the last training step
is pure noise, and predicting v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (= -x0 at t = T)
makes the model say where the shape is from the first sampling step. "trailing" timestep spacing
starts sampling at t = T itself. ``clip_sample`` stays False: clipping is for pixels in [-1, 1],
and clipping latents ruins them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .vocab import MAX_LENGTH, load_tokenizer

#: the noise schedule shared by training and sampling: SD's "scaled_linear" betas, rescaled so that
#: alpha_bar_T = 0 (zero terminal SNR), with v-prediction and sampling that starts at t = T
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "rescale_betas_zero_snr": True,
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
    "clip_sample": False,
    "steps_offset": 1,  # what StableDiffusionPipeline expects; "trailing" spacing ignores it
}


@dataclass
class VAEConfig:
    """An ``AutoencoderKL`` with len(channels) - 1 halvings: f = 2 for two blocks."""

    channels: tuple[int, ...] = (16, 32)
    latent_channels: int = 4
    layers_per_block: int = 1
    groups: int = 8
    mid_attention: bool = False  # self-attention at 16x16 costs a third more and is not needed


@dataclass
class TextConfig:
    """A ``CLIPTextModel``: a causal transformer over the prompt's tokens."""

    width: int = 64
    layers: int = 2
    heads: int = 2
    mlp: int = 128
    max_length: int = MAX_LENGTH


@dataclass
class ConditionalUNetConfig:
    """A ``UNet2DConditionModel``; ``attention[i]`` puts cross-attention (and self-attention)
    in level i. ``heads`` is diffusers' ``attention_head_dim``, which counts heads here."""

    channels: tuple[int, ...] = (32, 64, 64)
    attention: tuple[bool, ...] = (False, True, True)
    layers_per_block: int = 1
    heads: int = 4
    groups: int = 8


@dataclass
class TinySDConfig:
    """The sizes of all parts; ``image_size`` is the pixel side (32 for the shapes world)."""

    image_size: int = 32
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    unet: ConditionalUNetConfig = field(default_factory=ConditionalUNetConfig)

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae.channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TinySDConfig:
        def tuples(d):
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        return cls(image_size=data["image_size"], vae=VAEConfig(**tuples(data["vae"])),
                   text=TextConfig(**tuples(data["text"])),
                   unet=ConditionalUNetConfig(**tuples(data["unet"])))


def make_vae(config: TinySDConfig):
    """images [B, 3, H, W] in [-1, 1] <-> latents [B, 4, H / f, W / f]."""
    from diffusers import AutoencoderKL

    vae = config.vae
    n = len(vae.channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=vae.channels,
        layers_per_block=vae.layers_per_block, latent_channels=vae.latent_channels,
        norm_num_groups=vae.groups, sample_size=config.image_size,
        mid_block_add_attention=vae.mid_attention,
        scaling_factor=1.0,  # set from the trained encoder's latents (``set_latent_scale``)
    )


def make_text_encoder(config: TinySDConfig, tokenizer):
    """token ids [B, L] -> hidden states [B, L, width], the keys and values of cross-attention."""
    from transformers import CLIPTextConfig, CLIPTextModel

    text = config.text
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text.width, intermediate_size=text.mlp,
        num_hidden_layers=text.layers, num_attention_heads=text.heads,
        max_position_embeddings=text.max_length, projection_dim=text.width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))


def make_unet(config: TinySDConfig):
    """(noisy latents [B, 4, h, w], t [B], text states [B, L, width]) -> v [B, 4, h, w]."""
    from diffusers import UNet2DConditionModel

    unet = config.unet
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in unet.attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(unet.attention))
    return UNet2DConditionModel(
        sample_size=config.latent_size, in_channels=config.vae.latent_channels,
        out_channels=config.vae.latent_channels, block_out_channels=unet.channels,
        down_block_types=down, up_block_types=up, layers_per_block=unet.layers_per_block,
        cross_attention_dim=config.text.width, attention_head_dim=unet.heads,
        norm_num_groups=unet.groups,
    )


def make_noise_scheduler():
    """The training-time forward process: ``add_noise`` and ``get_velocity`` (the v target)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULE)


def make_scheduler(kind: str = "ddim", config: dict | None = None):
    """A sampler for the pipeline on the same schedule: "ddim" (the pipeline's own), "dpm++"
    (DPM-Solver++ 2M, as good at 10 steps as DDIM at 50 here), "euler" or "ddpm".

    config: a scheduler config to convert (``pipe.scheduler.config``); SCHEDULE when None.
    """
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
    )

    config = dict(SCHEDULE if config is None else config)
    if kind == "ddim":
        return DDIMScheduler.from_config(config, set_alpha_to_one=False)
    if kind == "dpm++":
        # zero terminal SNR: the scheduler starts at alpha_bar = 2^-24 instead of an infinite sigma
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    if kind == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if kind == "ddpm":
        return DDPMScheduler.from_config(config)
    raise ValueError(f'kind must be "ddim", "dpm++", "euler" or "ddpm", got {kind!r}')


def make_flow_scheduler(shift: float = 1.0):
    """The sampler of a flow-matching denoiser (tiny-shapes-flow): Euler steps of dx/dsigma = v
    from sigma = 1 (pure noise) down to 0, the U-Net asked at t = 1000 sigma.

    shift: SD3's time shift of the steps towards sigma = 1. SD3 uses 3.0 for 1024x1024 images and
    derives it from resolution (shift = sqrt(pixels / 256^2)): more pixels keep more of the image
    recognisable at a given sigma, so more steps must be spent at high noise. A 16x16x4 latent is
    far below SD3's base resolution, so the default is 1.0: no shift, the sigmas evenly spaced.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=SCHEDULE["num_train_timesteps"], shift=shift)


def build_pipeline(vae, text_encoder, tokenizer, unet, scheduler=None):
    """Assemble a ``diffusers.StableDiffusionPipeline`` (no safety checker: nothing to check)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler if scheduler is not None else make_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def random_pipeline(config: TinySDConfig | None = None, seed: int = 0):
    """An untrained pipeline of the given sizes (for tests and for the start of training)."""
    config = config or TinySDConfig()
    tokenizer = load_tokenizer(max_length=config.text.max_length)
    # the weights come from ``seed``; the caller's random state is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build_pipeline(make_vae(config), make_text_encoder(config, tokenizer), tokenizer,
                              make_unet(config))


def count_parameters(pipe) -> dict[str, int]:
    """Parameters of each network of a pipeline: {"vae", "text_encoder", "unet", "total"}."""
    counts = {name: sum(p.numel() for p in getattr(pipe, name).parameters())
              for name in ("vae", "text_encoder", "unet")}
    return counts | {"total": sum(counts.values())}


@torch.no_grad()
def set_latent_scale(vae, latents: torch.Tensor) -> float:
    """Store 1 / std of the encoder's latents as ``vae.config.scaling_factor``.

    The diffusion model works on ``latents * scaling_factor``, which then have about unit variance
    like the noise (SD 1.x's 0.18215 was found the same way).
    """
    scale = float(1.0 / latents.float().std())
    vae.register_to_config(scaling_factor=scale)
    return scale
