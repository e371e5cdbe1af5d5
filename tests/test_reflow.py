"""One round of reflow (``python -m course train reflow``): the pairs come from the teacher's own
sampler, the loss is flow matching on the pair, and a short run on a small teacher is seeded,
leaves the caller's random state alone and writes a pipeline diffusers loads."""

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from course.__main__ import main
from course.models import pipelines
from course.training import RECIPES
from course.training.reflow import (
    ReflowRecipe,
    reflow_loss,
    teacher_pairs,
    train_reflow,
)
from course.training.tiny_sd import LearningRate, train_tiny_sd
from tests.helpers import trains_the_same_whatever_the_callers_random_state
from tests.test_tiny_sd_flow import SMALL_FLOW


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    """A small flow pipeline (a few steps of tiny-sd-flow's recipe), saved as a folder."""
    folder = tmp_path_factory.mktemp("teacher")
    result = train_tiny_sd(replace(SMALL_FLOW, time_sampling="uniform"), device="cpu",
                           progress=False)
    pipelines.save_tiny_pipeline(result.pipe, folder, result.record)
    return folder


def small_recipe(teacher) -> ReflowRecipe:
    return ReflowRecipe(teacher=str(teacher), pairs=8, pair_steps=2, steps=3, batch_size=4,
                        warmup_steps=1)


class Exact(torch.nn.Module):
    """A U-Net stand-in that knows the pair: it returns z1 - z0 whatever it is asked."""

    def __init__(self, z0, z1):
        super().__init__()
        self.velocity = z1 - z0

    def forward(self, x, t, encoder_hidden_states):
        assert t.shape == (len(x),) and ((t > 0) & (t < 1000)).all()
        return SimpleNamespace(sample=self.velocity)


def test_the_loss_is_zero_for_the_pairs_velocity_and_not_for_its_opposite():
    gen = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 6, 4, 8, 8, generator=gen)
    states = torch.zeros(6, 3, 5)
    assert reflow_loss(Exact(z0, z1), z0, z1, states, gen).item() == 0.0
    wrong = reflow_loss(Exact(z1, z0), z0, z1, states, gen).item()  # x0 - noise
    torch.testing.assert_close(wrong, (2 * (z1 - z0)).pow(2).mean().item(), rtol=1e-5, atol=0)


def test_the_loss_interpolates_on_the_straight_line_between_the_pair():
    z0, z1 = torch.zeros(4, 1, 2, 2), torch.ones(4, 1, 2, 2)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, t, encoder_hidden_states):
            seen.append((x.clone(), t.clone()))
            return SimpleNamespace(sample=torch.zeros_like(x))

    reflow_loss(Probe(), z0, z1, torch.zeros(4, 3, 5), torch.Generator().manual_seed(1))
    x, t = seen[0]
    # z_sigma = (1 - sigma) * 0 + sigma * 1 = sigma, and the U-Net is asked at 1000 sigma
    torch.testing.assert_close(x[:, 0, 0, 0] * 1000, t)


def test_learning_rate_warms_up_then_decays_to_zero():
    learning_rate = LearningRate(ReflowRecipe(lr=1e-3, warmup_steps=10, steps=100))
    assert learning_rate(1) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi / 100)))
    assert learning_rate(50) == pytest.approx(0.5e-3)
    assert learning_rate(100) == pytest.approx(0.0, abs=1e-12)


def test_pairs_are_the_teachers_own_samples_from_their_noise(small_teacher):
    pipe = pipelines.load_pipeline(str(small_teacher), device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    recipe = small_recipe(small_teacher)
    z1, z0, captions = teacher_pairs(pipe, recipe, batch_size=3, progress=False)
    assert z1.shape == z0.shape == (8, 4, 16, 16) and len(captions) == 8
    again = pipe(captions[:2], latents=z1[:2].clone(), guidance_scale=1.0, num_inference_steps=2,
                 output_type="latent").images
    torch.testing.assert_close(again, z0[:2], rtol=1e-4, atol=1e-5)
    z1_b, z0_b, captions_b = teacher_pairs(pipe, recipe, progress=False)  # other batching
    assert torch.equal(z1_b, z1) and captions_b == captions
    torch.testing.assert_close(z0_b, z0, rtol=1e-4, atol=1e-5)


def test_training_is_seeded_changes_only_the_unet_and_leaves_the_caller_alone(small_teacher):
    recipe = small_recipe(small_teacher)
    result = trains_the_same_whatever_the_callers_random_state(train_reflow, recipe, ["unet"])
    teacher = pipelines.load_pipeline(str(small_teacher), device="cpu", dtype=torch.float32)
    changed = [name for name, value in result.pipe.unet.state_dict().items()
               if not torch.equal(value, teacher.unet.state_dict()[name])]
    assert changed, "the fine-tune did not move the U-Net"
    for network in ("text_encoder", "vae"):  # frozen
        ours = getattr(result.pipe, network).state_dict()
        for name, value in getattr(teacher, network).state_dict().items():
            assert torch.equal(ours[name], value), f"{network}.{name} changed"
    assert result.record["pairs"]["count"] == 8 and result.record["fine_tune"]["steps"] == 3
    assert math.isfinite(result.record["fine_tune"]["final_loss"])
    assert result.record["recipe"]["teacher"] == str(small_teacher)


def test_the_command_writes_a_pipeline_diffusers_loads(small_teacher, tmp_path, capsys):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusionPipeline

    assert "reflow" in RECIPES
    output = tmp_path / "student"
    assert main(["train", "reflow", "--teacher", str(small_teacher), "--pairs", "8",
                 "--pair-steps", "2", "--steps", "2", "--batch-size", "4", "--device", "cpu",
                 "--output", str(output), "--no-progress"]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    record = json.loads((output / "training.json").read_text())
    assert record["recipe"]["pairs"] == 8 and record["recipe"]["steps"] == 2
    pipe = StableDiffusionPipeline.from_pretrained(str(output))
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert not list(output.rglob("*.bin")) and list(output.rglob("*.safetensors"))
