"""Image to image written out (``course.tinysd.img2img``) against diffusers' own
``StableDiffusionImg2ImgPipeline`` built from the same components, with the same generator."""

import pytest
import torch

from course.data.shapes import Combo, render_combinations
from course.models import load_pipeline
from course.tinysd.img2img import img2img
from course.tinysd.model import make_scheduler


@pytest.fixture(scope="module")
def pipes():
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = load_pipeline("tiny-shapes", device="cpu", dtype=torch.float32)
    reference = StableDiffusionImg2ImgPipeline(**pipe.components)
    reference.set_progress_bar_config(disable=True)
    return pipe, reference


@pytest.fixture(scope="module")
def red_circle():
    return render_combinations([Combo("red", "circle", "left")], seed=0) / 2 + 0.5  # [0, 1]


@pytest.mark.parametrize("kind, strength, w", [("ddim", 0.3, 5.0), ("ddim", 1.0, 3.0),
                                               ("euler", 0.6, 7.5), ("dpm++", 0.5, 5.0)])
def test_img2img_is_the_diffusers_pipeline(pipes, red_circle, kind, strength, w):
    pipe, reference = pipes
    pipe.scheduler = reference.scheduler = make_scheduler(kind, pipe.scheduler.config)
    ours = img2img(pipe, red_circle, "a blue square on the right", strength, guidance_scale=w,
                   steps=10, seed=3)
    theirs = reference("a blue square on the right", image=red_circle, strength=strength,
                       guidance_scale=w, num_inference_steps=10,
                       generator=torch.Generator().manual_seed(3), output_type="pt").images
    assert ours.shape == theirs.shape == (1, 3, 32, 32)
    assert (ours - theirs).abs().max() <= 1e-5


def test_strength_decides_how_much_of_the_input_survives(pipes, red_circle):
    pipe, _ = pipes
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    distance = [(img2img(pipe, red_circle, "a blue square on the right", s, steps=20, seed=0)
                 - red_circle).abs().mean().item() for s in (0.1, 0.5, 1.0)]
    assert distance[0] < distance[1] < distance[2]
    with pytest.raises(ValueError, match="strength"):
        img2img(pipe, red_circle, "a red circle", strength=0.0)
    with pytest.raises(ValueError, match="runs no step"):
        img2img(pipe, red_circle, "a red circle", strength=0.05, steps=10)
