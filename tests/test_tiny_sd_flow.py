"""The tiny pipeline's denoiser trained with flow matching (``train tiny-sd-flow``, the bundled
tiny-shapes-flow): its loss against diffusers' SD3 training, its folder against diffusers alone,
its sampling against a hand-written Euler loop, and what it draws."""

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from course.__main__ import main
from course.data import caption, parse_caption
from course.diffusion.flow import euler_flow_step, flow_sigmas
from course.metrics import prompt_adherence
from course.models import pipelines, registry
from course.tinysd.evaluate import evaluate_adherence
from course.tinysd.model import ConditionalUNetConfig, TextConfig, TinySDConfig, VAEConfig
from course.training.objectives import FlowMatching, VPrediction, make_objective
from course.training.tiny_sd import TinySDRecipe, train_tiny_sd
from course.training.tiny_sd_flow import FLOW_RECIPE
from tests.helpers import trains_the_same_whatever_the_callers_random_state

SMALL = TinySDConfig(
    vae=VAEConfig(channels=(8, 16), groups=4),
    text=TextConfig(width=32, layers=1, heads=2, mlp=64),
    unet=ConditionalUNetConfig(channels=(16, 32), attention=(False, True), heads=2, groups=4),
)
SMALL_FLOW = TinySDRecipe(model=SMALL, dataset_size=64, vae_steps=3, vae_batch_size=8, steps=3,
                          batch_size=8, warmup_steps=2, objective="flow",
                          time_sampling="logit-normal")


class Recorder(torch.nn.Module):
    """A U-Net stand-in: v = 0.5 x + t / 1000 + mean of the text states, with every t it saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t, encoder_hidden_states):
        t = torch.as_tensor(t, dtype=x.dtype).expand(len(x))
        self.seen.append(t.clone())
        text = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=0.5 * x + t.view(-1, 1, 1, 1) / 1000 + text)


@pytest.fixture(scope="module")
def flow_pipe():
    return pipelines.load_pipeline("tiny-shapes-flow", device="cpu", dtype=torch.float32)


def test_flow_loss_is_what_sd3_training_computes():
    """diffusers' SD3 script: u logit-normal, indices into the training scheduler, sigmas and
    timesteps = its entries, noisy = (1 - sigma) x0 + sigma noise, target noise - x0, weights 1."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.training_utils import (
        compute_density_for_timestep_sampling,
        compute_loss_weighting_for_sd3,
    )

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    torch.manual_seed(3)
    z0, states = torch.randn(6, 4, 16, 16), torch.randn(6, 16, 32)
    u = compute_density_for_timestep_sampling("logit_normal", 6, logit_mean=0.0, logit_std=1.0)
    indices = (u * scheduler.config.num_train_timesteps).long()
    sigmas, timesteps = scheduler.sigmas[indices], scheduler.timesteps[indices]
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(11))
    noisy = (1.0 - sigmas.view(-1, 1, 1, 1)) * z0 + sigmas.view(-1, 1, 1, 1) * noise
    sd3_unet = Recorder()
    pred = sd3_unet(noisy, timesteps, states).sample
    weighting = compute_loss_weighting_for_sd3("logit_normal", sigmas).view(-1, 1, 1, 1)
    expected = torch.mean((weighting * (pred - (noise - z0)) ** 2).reshape(6, -1), 1).mean()

    class SameSigmas(FlowMatching):  # the objective's own noise, SD3's sigmas
        def sigmas(self, n, generator, device):
            return sigmas.clone()

    ours = Recorder()
    loss = SameSigmas()(ours, z0, states, torch.Generator().manual_seed(11))
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours.seen[0], timesteps.float(), rtol=0, atol=1e-3)


def test_time_sampling_options_and_their_validation():
    generator = torch.Generator().manual_seed(0)
    logit = FlowMatching("logit-normal").sigmas(20000, generator, "cpu")
    uniform = FlowMatching("uniform").sigmas(20000, generator, "cpu")
    for sigma in (logit, uniform):
        assert sigma.dtype == torch.float32 and 0 < sigma.min() and sigma.max() < 1
        assert abs(sigma.mean().item() - 0.5) < 0.01
    assert abs(uniform.std().item() - 12 ** -0.5) < 0.005  # U(0, 1)
    assert abs(logit.std().item() - 0.2083) < 0.005  # sigmoid(N(0, 1)): fewer draws at the ends
    shifted = FlowMatching("uniform", shift=3.0).sigmas(20000, generator, "cpu")
    assert shifted.mean() > 0.6  # towards pure noise
    assert isinstance(make_objective(TinySDRecipe()), VPrediction)
    with pytest.raises(ValueError, match="v-prediction"):
        make_objective(replace(TinySDRecipe(), time_sampling="logit-normal"))
    with pytest.raises(ValueError, match="time_sampling"):
        make_objective(replace(FLOW_RECIPE, time_sampling="cosine"))
    with pytest.raises(ValueError, match="objective"):
        train_tiny_sd(replace(SMALL_FLOW, objective="epsilon"), device="cpu", progress=False)


def test_flow_recipe_is_tiny_shapes_recipe_but_its_objective():
    """The same networks, data, steps, batch, learning rate, EMA and caption dropout as the run
    that made tiny-shapes; stage 1 replaced by its autoencoder."""
    record = pipelines.training_info(registry.verify(registry.ENTRIES["tiny-shapes"]))
    tiny = TinySDRecipe.from_dict(record["recipe"])
    assert tiny.objective == "v-prediction"  # a record from before the field: the default
    assert FLOW_RECIPE == replace(tiny, objective="flow", time_sampling="uniform",
                                  vae_from="tiny-shapes")


def test_train_command_writes_a_flow_pipeline_diffusers_loads_alone(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusionPipeline

    out = tmp_path / "flow"
    code = main(["train", "tiny-sd-flow", "--steps", "3", "--batch-size", "4",
                 "--dataset-size", "16", "--device", "cpu", "--no-progress",
                 "--output", str(out)])
    assert code == 0
    record = json.loads((out / "training.json").read_text())
    assert record["recipe"]["objective"] == "flow"
    assert record["recipe"]["time_sampling"] == "uniform"
    assert record["vae"]["from"] == "tiny-shapes" and record["denoiser"]["steps"] == 3
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "FlowMatchEulerDiscreteScheduler" and config["shift"] == 1.0
    tiny = registry.ENTRIES["tiny-shapes"].local_path()
    weights = "vae/diffusion_pytorch_model.safetensors"
    assert (out / weights).read_bytes() == (tiny / weights).read_bytes()

    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    kwargs = dict(num_inference_steps=3, guidance_scale=3.0, output_type="pt")
    prompt = ["a blue square at the top"]
    # as diffusers ships them, StableDiffusionPipeline cannot start a flow scheduler's loop
    if not hasattr(pipe.scheduler, "init_noise_sigma"):
        with pytest.raises(AttributeError, match="init_noise_sigma"):
            pipe(prompt, **kwargs)
        pipe.scheduler.init_noise_sigma = 1.0  # the one line it needs: x_1 = pure noise
    images = pipe(prompt, generator=torch.Generator().manual_seed(2), **kwargs).images
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()
    ours = pipelines.load_pipeline(str(out), device="cpu", dtype=torch.float32)
    expected = ours(prompt, generator=torch.Generator().manual_seed(2), **kwargs).images
    torch.testing.assert_close(images, expected, rtol=1e-5, atol=1e-5)


def test_pipeline_sampling_is_the_hand_written_euler_loop(flow_pipe):
    """__call__ with the flow scheduler = pure noise at sigma 1, the U-Net asked at 1000 sigma,
    Euler steps of the guided velocity down to sigma 0 (``course.diffusion.flow``)."""
    steps, w, prompt = 6, 3.0, "a green triangle on the right"
    seen = []
    hook = flow_pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(args[1].clone()), with_kwargs=True)
    try:
        got = flow_pipe(prompt, num_inference_steps=steps, guidance_scale=w,
                        output_type="latent", generator=torch.Generator().manual_seed(5)).images
    finally:
        hook.remove()
    sigmas = flow_sigmas(steps)  # 1, ..., sigma_min, 0
    assert len(seen) == steps
    torch.testing.assert_close(torch.stack(seen).double(), 1000 * sigmas[:-1], rtol=0, atol=1e-3)

    with torch.no_grad():
        conditional, unconditional = flow_pipe.encode_prompt(prompt, "cpu", 1, True, "")
        states = torch.cat([unconditional, conditional])
        x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5))  # sigma = 1
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            t = torch.full((2,), 1000 * float(sigma))
            v_u, v_c = flow_pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=states
                                      ).sample.chunk(2)
            # v = v_u + w (v_c - v_u), then x <- x + (sigma_next - sigma) v
            x = euler_flow_step(x, v_u + w * (v_c - v_u), float(sigma), float(sigma_next))
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-4)


PROMPTS = ["a red circle on the left", "a blue square at the top",
           "a yellow triangle in the center", "a green square at the bottom"]


def _adherence(pipe, seed: int) -> dict:
    images = pipe(PROMPTS, num_inference_steps=25, guidance_scale=3.0, output_type="pt",
                  generator=[torch.Generator().manual_seed(seed * 10 + i)
                             for i in range(len(PROMPTS))]).images * 2 - 1
    return prompt_adherence(images, PROMPTS)


def test_bundled_flow_model_draws_the_prompt(flow_pipe):
    """Uniform training sigmas: colour, shape and position, as ``python -m course.tinysd.evaluate``
    measured on 96 seen and 96 held-out prompts (100% at guidance 1 and 3)."""
    assert all(caption(parse_caption(p)) == p for p in PROMPTS)
    for seed in (0, 1):
        adherence = _adherence(flow_pipe, seed)
        assert adherence["all"] == 1.0, adherence


def test_logit_normal_sigmas_never_learnt_where_shapes_go():
    """SD3's logit-normal density, same budget: colour and shape right, position at chance
    (13-17% of 96 prompts by ``python -m course.tinysd.evaluate``), since only 1.4% of its draws
    had sigma > 0.9, where the layout is decided."""
    pipe = pipelines.load_pipeline("tiny-shapes-flow-logit-normal", device="cpu",
                                   dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    record = pipelines.training_info(registry.verify(
        registry.ENTRIES["tiny-shapes-flow-logit-normal"]))
    assert record["recipe"]["time_sampling"] == "logit-normal"
    positions = []
    for seed in (0, 1):
        adherence = _adherence(pipe, seed)
        assert adherence["color"] == adherence["shape"] == 1.0, adherence
        positions.append(adherence["position"])
    assert sum(positions) / len(positions) <= 0.5, positions


def test_bundled_flow_model_is_what_its_entry_says(flow_pipe):
    folder = registry.verify(registry.ENTRIES["tiny-shapes-flow"])
    record = pipelines.training_info(folder)
    ran = TinySDRecipe.from_dict(record["recipe"])
    assert ran == replace(FLOW_RECIPE, vae_steps=0)  # stage 1 skipped: the reused autoencoder
    assert not record["stopped_by_time_limit"]
    assert record["vae"]["from"] == "tiny-shapes" and record["denoiser"]["steps"] == 1000
    tiny = registry.ENTRIES["tiny-shapes"].local_path()
    for name in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                 "unet/config.json"):
        assert (folder / name).read_bytes() == (tiny / name).read_bytes(), name
    assert flow_pipe.scheduler.config.shift == 1.0
    with pytest.raises(ValueError, match="flow-matching pipeline"):
        evaluate_adherence(flow_pipe, n_prompts=1, guidance_scales=(1.0,), steps=2,
                           scheduler="ddim")


def test_flow_training_leaves_the_callers_random_state_alone():
    first = trains_the_same_whatever_the_callers_random_state(train_tiny_sd, SMALL_FLOW,
                                                              ("unet", "text_encoder"))
    uniform = train_tiny_sd(replace(SMALL_FLOW, time_sampling="uniform"), device="cpu",
                            progress=False)
    assert not torch.equal(uniform.pipe.unet.conv_out.weight, first.pipe.unet.conv_out.weight)
