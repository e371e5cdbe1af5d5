"""Lesson 06: cost measurements, the latent explorer, and the hand-written pipeline's check."""

import nbformat
import pytest
import torch
from matplotlib.figure import Figure

from course.checks import lesson06
from course.tinysd import costs
from course.viz import latents as latent_viz
from tests.helpers import LESSONS, SOLUTIONS

NOTEBOOKS = [p for p in SOLUTIONS + LESSONS if p.name.startswith("06_")]


@pytest.fixture(scope="module")
def pipe():
    return lesson06._pipeline("ddim")


@torch.no_grad()
def generate(pipe, prompt, negative_prompt="", guidance_scale=5.0, steps=25, seed=0):
    """The right answer, written as a learner would."""
    tok, scheduler = pipe.tokenizer, pipe.scheduler

    def embed(text):
        ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return pipe.text_encoder(ids)[0]

    text = torch.cat([embed(negative_prompt), embed(prompt)])
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
    latents = latents * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        uncond, cond = pipe.unet(model_input, t, encoder_hidden_states=text).sample.chunk(2)
        latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (image / 2 + 0.5).clamp(0, 1)


# ---------------------------------------------------------------------------- costs


def test_arithmetic_of_latent_space():
    assert costs.value_count(costs.SD15_PIXELS) == 786_432
    assert costs.compression(costs.SD15_PIXELS, costs.SD15_LATENTS) == 48
    assert costs.compression((3, 32, 32), (4, 16, 16)) == 3
    assert costs.attention_entries((4, 64, 64)) == 4096**2


def test_saved_activation_bytes_counts_what_backward_keeps():
    layer = torch.nn.Linear(100, 10)
    x = torch.randn(32, 100)
    # a linear layer keeps its input for the weight gradient; its weight is not an activation
    assert costs.saved_activation_bytes(lambda: layer(x), layer) == 32 * 100 * 4
    # tanh keeps its output as well
    both = costs.saved_activation_bytes(lambda: torch.tanh(layer(x)), layer)
    assert both == 32 * 100 * 4 + 32 * 10 * 4


def test_written_bytes_counts_new_tensors_not_views():
    x = torch.randn(64, 64)
    assert costs.written_bytes(lambda: x.view(-1)) == 0
    assert costs.written_bytes(lambda: x * 2) == 64 * 64 * 4
    assert costs.written_bytes(lambda: (x * 2).sum()) == 64 * 64 * 4 + 4


def test_step_costs_measure_the_like_for_like_pair(pipe):
    from course.models import load_unet

    rows = costs.measure_step_costs(pipe, load_unet("ddpm-shapes"), batch=2, repeats=1)
    assert [r["input"] for r in rows] == ["2x3x32x32", "2x4x16x16", "2x3x32x32", "2x4x16x16"]
    latent, twin = rows[1], rows[2]
    assert abs(twin["params"] - latent["params"]) < 0.01 * latent["params"]  # same architecture
    assert twin["saved_mb"] > 2 * latent["saved_mb"]  # pixels cost more memory
    assert twin["written_mb"] > 2 * latent["written_mb"]
    assert all(r["peak_mb"] is None for r in rows)  # CPU: no allocator peak
    table = costs.format_costs(rows)
    assert "saved MB" in table and len(table.splitlines()) == 5


def test_the_pixel_twin_leaves_the_global_rng_alone(pipe):
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    twin = costs.pixel_twin(pipe.unet)
    assert twin.config.in_channels == 3 and twin.config.sample_size == 32
    assert torch.equal(torch.random.get_rng_state(), state)


# ---------------------------------------------------------------------------- the explorer


def test_psnr():
    x = torch.zeros(3, 4, 4)
    assert latent_viz.psnr(x, x) == float("inf")
    assert latent_viz.psnr(x + 0.2, x) == pytest.approx(20.0)  # 10 log10(4 / 0.04)


def test_encode_decode_round_trip(pipe):
    image = latent_viz.pick_image("shapes", 0)
    parts = latent_viz.encode_decode(pipe, image, t=0)
    assert parts["latents"].shape == (4, 16, 16) and parts["decoded"].shape == (3, 32, 32)
    assert latent_viz.psnr(parts["decoded"], image) > 30  # the VAE's own world: nearly lossless
    # scaled by scaling_factor, the training set's latents have unit spread; one image of a dark
    # background spreads a little less (0.68 for this one; unscaled, 0.46)
    assert 0.6 < parts["latents"].std() < 1.4
    noisy = latent_viz.encode_decode(pipe, image, t=999)
    assert noisy["alpha_bar"] < 1e-6  # zero terminal SNR: nothing of the image is left


def test_latent_figure_is_a_pure_render(pipe):
    image = latent_viz.pick_image(latent_viz.SOURCES[1], 0)
    fig = latent_viz.latent_figure(pipe, image, t=300, seed=1, source="photo")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 12
    assert "3x fewer" in fig._suptitle.get_text()


def test_latent_widget_draws_its_default_view(pipe):
    widget = latent_viz.latent_widget(pipe)
    assert "course-latents" in widget._dom_classes
    picture = widget.children[-1]
    assert "course-picture" in picture._dom_classes and len(picture.value) > 1000


# ---------------------------------------------------------------------------- the check


def test_the_right_pipeline_passes_every_case_and_keeps_the_rng():
    torch.manual_seed(3)
    state = torch.random.get_rng_state()
    report = lesson06.generate.run(generate, include_hidden=True)
    assert report.passed, str(report)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_hidden_cases_exist_and_cover_other_schedulers():
    hidden = [c for c in lesson06.generate.cases if c.hidden]
    assert len(hidden) >= 3
    assert any("DPM" in c.name for c in hidden)
    assert len(lesson06.generate.hints) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_has_the_lesson_structure(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["course"] == {"lesson": "06"}
    text = "\n".join(c.source for c in nb.cells)
    assert "check.generate(generate)" in text
    assert "latent_widget(pipe" in text
    assert "Rombach" in text and "<details>" in text
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
