"""The same seed gives the same picture, bit for bit, on a CPU, for every sampler the lessons use.

Each sampler runs twice from one seed, with torch's global generator put in a different state
before each run: a sampler that drew from the global generator instead of the seeded one would
differ. A third run from another seed must differ, so that equality means the seed decides.
Sizes are small (2 images, a few steps): the whole file takes seconds.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from course.diffusion import make_beta_schedule
from course.models import load_pipeline, load_unet
from course.sampling import ddim_sample, ddpm_sample, module_schedulers, scheduler_sample
from course.tinysd.evaluate import generate
from course.tinysd.guided import guided_sample
from course.tinysd.img2img import img2img

PROMPTS = ["a red circle on the left", "a blue square at the top"]
STEPS = 4


@pytest.fixture(scope="module")
def unet():
    return load_unet("ddpm-shapes", device="cpu")


@pytest.fixture(scope="module")
def pipes():
    """The tiny pipelines on the CPU in float32: DDIM (its own), flow (FlowMatchEuler)."""
    return {name: load_pipeline(name, device="cpu", dtype=torch.float32)
            for name in ("tiny-shapes", "tiny-shapes-flow")}


@pytest.fixture(scope="module")
def lora_pipe():
    from course.lora import load_adapter, set_adapter_strengths

    pipe = load_pipeline("tiny-shapes", device="cpu", dtype=torch.float32)
    for name in ("purple", "outline"):
        load_adapter(pipe, name, adapter_name=name)
    set_adapter_strengths(pipe, {"purple": 1.0, "outline": 0.5})
    return pipe


def _same_seed_same_image(sample) -> None:
    """``sample(seed)`` -> images: equal bit for bit from one seed, different from another."""
    torch.manual_seed(1)
    first = sample(0)
    torch.manual_seed(2)  # a sampler reading the global generator would now draw other noise
    again = sample(0)
    assert torch.equal(first, again), f"max |difference| {(first - again).abs().max():.3e}"
    assert not torch.equal(first, sample(1)), "another seed gave the same image"


# Lesson 02 and 03's own samplers, on lesson 02's model ---------------------------------------

def test_ddpm_sample(unet):
    betas = make_beta_schedule("linear", 1000)
    _same_seed_same_image(lambda seed: ddpm_sample(
        unet, 2, betas, steps=STEPS, generator=torch.Generator().manual_seed(seed),
        progress=False)[0])


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_sample(unet, eta):
    betas = make_beta_schedule("linear", 1000)

    def sample(seed):
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((2, 3, 32, 32), generator=generator)
        return ddim_sample(unet, noise, betas, steps=STEPS, eta=eta, generator=generator)

    _same_seed_same_image(sample)


@pytest.mark.parametrize("name", sorted(module_schedulers()) + ["Heun"])
def test_diffusers_schedulers_on_lesson_02s_model(unet, name):
    """Lesson 00's DPM-Solver++, lesson 03's six schedulers (and its loop exercise's Heun)."""
    from diffusers import HeunDiscreteScheduler

    factory = module_schedulers().get(name, HeunDiscreteScheduler)

    def sample(seed):
        scheduler = factory(num_train_timesteps=1000, beta_schedule="linear")
        return scheduler_sample(unet, scheduler, 2, STEPS,
                                generator=torch.Generator().manual_seed(seed))

    _same_seed_same_image(sample)


# The tiny text-to-image pipelines (lessons 04 to 08) ----------------------------------------

def _swap(pipe, scheduler_class: str, **config):
    import diffusers

    return getattr(diffusers, scheduler_class).from_config(pipe.scheduler.config, **config)


@pytest.mark.parametrize("scheduler", [None, "DPMSolverMultistepScheduler",
                                       "EulerDiscreteScheduler"])
def test_tiny_pipeline(pipes, scheduler):
    """``pipe(...)`` with its own DDIM, or with DPM-Solver++ or Euler swapped in."""
    pipe = pipes["tiny-shapes"]
    own = pipe.scheduler
    if scheduler is not None:
        pipe.scheduler = _swap(pipe, scheduler)
    try:
        _same_seed_same_image(partial(generate, pipe, PROMPTS, 3.0, STEPS))
    finally:
        pipe.scheduler = own


def test_tiny_flow_pipeline(pipes):
    """Lesson 08's flow pipeline, sampled with ``FlowMatchEulerDiscreteScheduler``."""
    pipe = pipes["tiny-shapes-flow"]
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    _same_seed_same_image(partial(generate, pipe, PROMPTS, 3.0, STEPS))


def test_guided_sample(pipes):
    """Lesson 05's guided loop written out (a guidance scale per image)."""
    pipe = pipes["tiny-shapes"]
    _same_seed_same_image(lambda seed: guided_sample(
        pipe, PROMPTS, torch.tensor([1.0, 7.5]), STEPS, seed=seed))


@pytest.mark.parametrize("posterior", ["sample", "mean"])
def test_img2img(pipes, posterior):
    """Lesson 06's img2img: the seed draws the autoencoder's sample and the added noise."""
    from course.data import shapes_dataset

    pipe = pipes["tiny-shapes"]
    image = (shapes_dataset(1, seed=3)[0] + 1) / 2  # [1, 3, 32, 32] in [0, 1]
    _same_seed_same_image(lambda seed: img2img(pipe, image, PROMPTS[0], strength=0.6,
                                               steps=STEPS, seed=seed, posterior=posterior))


def test_tiny_pipeline_with_lora_adapters(lora_pipe):
    """Lesson 07: both bundled adapters loaded and mixed."""
    _same_seed_same_image(partial(generate, lora_pipe, ["a purple triangle at the top"] * 2,
                                  1.0, STEPS))
