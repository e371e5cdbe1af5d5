"""Lesson 05: the guidance blend, the guided loop against the pipeline, its pictures and widget,
and checks that pass the right answers and name each known mistake."""

import ast

import nbformat
import pytest
import torch

from course import REPO_URL
from course.checks import lesson05
from course.diffusion import cfg_combine
from course.models import load_pipeline
from course.tinysd.guided import encode_prompts, guided_latents, guided_sample, start_latents
from course.viz import guidance, plots
from tests.helpers import LESSONS, SOLUTIONS

NOTEBOOKS = [p for p in SOLUTIONS + LESSONS if p.name.startswith("05_")]


@pytest.fixture(scope="module")
def pipe():
    pipe = load_pipeline("tiny-shapes", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# The right answers, written here as a learner would (the checks refuse library code).


def right_combine(eps_uncond, eps_cond, guidance_scale):
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def right_loop(unet, scheduler, cond, uncond, latents, guidance_scale, steps):
    scheduler.set_timesteps(steps)
    x = latents * scheduler.init_noise_sigma
    states = torch.cat([uncond, cond])
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([x, x]), t)
            pred_uncond, pred_cond = unet(model_input, t,
                                          encoder_hidden_states=states).sample.chunk(2)
            x = scheduler.step(right_combine(pred_uncond, pred_cond, guidance_scale), t,
                               x).prev_sample
    return x



def test_cfg_combine_endpoints_and_per_image_scales():
    gen = torch.Generator().manual_seed(0)
    uncond, cond = torch.randn(3, 4, 5, 5, generator=gen), torch.randn(3, 4, 5, 5, generator=gen)
    assert torch.allclose(cfg_combine(uncond, cond, 1.0), cond)
    assert torch.equal(cfg_combine(uncond, cond, 0.0), uncond)
    assert torch.allclose(cfg_combine(uncond, cond, 7.5), uncond + 7.5 * (cond - uncond))
    w = torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1, 1)
    mixed = cfg_combine(uncond, cond, w)
    for i, scale in enumerate((0.0, 1.0, 3.0)):
        assert torch.allclose(mixed[i], cfg_combine(uncond[i], cond[i], scale))
    assert cfg_combine(uncond.double(), cond.double(), 2.0).dtype == torch.float64


def test_guided_sample_matches_the_pipeline(pipe):
    prompts = ["a red circle on the left", "a blue square at the top"]
    latents = start_latents(pipe, 2, seed=3)
    for w in (7.5, 1.0):
        mine = guided_sample(pipe, prompts, w, 6, latents=latents)
        theirs = pipe(prompts, latents=latents.clone(), guidance_scale=w, num_inference_steps=6,
                      output_type="pt").images * 2 - 1
        assert (mine.clamp(-1, 1) - theirs).abs().max() < 1e-4
    negative = guided_sample(pipe, prompts, 5.0, 6, latents=latents, negative_prompt="red")
    theirs = pipe(prompts, negative_prompt=["red", "red"], latents=latents.clone(),
                  guidance_scale=5.0, num_inference_steps=6, output_type="pt").images * 2 - 1
    assert (negative.clamp(-1, 1) - theirs).abs().max() < 1e-4


def test_per_image_scales_equal_separate_runs_and_w0_is_unconditional(pipe):
    prompts = ["a green triangle in the center"] * 2
    latents = start_latents(pipe, 2, seed=1)
    both = guided_sample(pipe, prompts, torch.tensor([0.0, 5.0]), 4, latents=latents)
    alone = guided_sample(pipe, prompts[1:], 5.0, 4, latents=latents[1:])
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    empty = guided_sample(pipe, [""], 1.0, 4, latents=latents[:1])
    assert torch.allclose(both[0], empty[0], atol=1e-5)


def test_encode_prompts_and_start_latents(pipe):
    uncond, cond = encode_prompts(pipe, ["a red circle on the left"], negative_prompt=None)
    assert uncond.shape == cond.shape == (1, pipe.tokenizer.model_max_length, 64)
    with pytest.raises(ValueError):
        encode_prompts(pipe, ["a", "b"], negative_prompt=["x"])
    assert torch.equal(start_latents(pipe, 3, 2)[1:], start_latents(pipe, 3, 2)[1:])
    assert start_latents(pipe, 2, 0).shape == (2, 4, 16, 16)
    x = guided_latents(pipe.unet, pipe.scheduler, cond, uncond, start_latents(pipe, 1), 3.0, 2)
    assert x.shape == (1, 4, 16, 16)


def _png(figure) -> bytes:
    data = plots.figure_to_png(figure)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_pictures_are_pure():
    image = torch.rand(3, 32, 32) * 2.4 - 1.2
    base = _png(guidance.guidance_figure(image, "a red circle on the left", 7.5))
    assert base == _png(guidance.guidance_figure(image, "a red circle on the left", 7.5))
    assert base != _png(guidance.guidance_figure(image, "a red circle on the left", 12.0))
    _png(guidance.guidance_figure(image, "a circle", 5.0, negative_prompt="blue", steps=10,
                                  seconds=0.2))
    assert base != _png(guidance.guidance_figure(image, "a red circle on the left", 7.5,
                                                 judge=False))  # no shapes-world reading
    _png(guidance.scale_grid(torch.rand(6, 3, 32, 32) * 2 - 1, ["a", "b"], (1, 7, 20)))
    rows = [{"w": w, "color": 1.0, "shape": 1.0, "position": 0.9, "all": 0.9,
             "saturation": 0.1 + w / 100, "clipped": w / 1000} for w in (0, 1, 7.5, 20)]
    _png(guidance.tradeoff_figure(rows, title="t"))
    full = [r for r in rows if r["w"] > 0]
    weak = [r | {"all": a} for r, a in zip(full, (0.6, 0.95, 0.5))]
    curves = guidance.adherence_curves({"full": full, "weak": weak})
    labels = [t.get_text() for t in curves.axes[0].get_legend().get_texts()]
    assert labels == ["full: best 90% at w = 1", "weak: best 95% at w = 7.5"]
    assert _png(curves) != _png(guidance.adherence_curves({"full": full, "weak": full}))
    four = guidance.adherence_curves({str(i): full for i in range(4)})  # every model drawn
    assert len(four.axes[0].get_legend().get_texts()) == 4
    with pytest.raises(ValueError, match="every w must be > 0"):
        guidance.adherence_curves({"full": rows})
    assert guidance.clipped_share(torch.tensor([[[[0.5, 1.5], [-2.0, 0.0]]]])) == 0.5
    assert guidance.mean_saturation(-torch.ones(1, 3, 2, 2) * 0.2) == 0.0


def test_widget_builds_with_the_bundled_pipeline_and_redraws(pipe):
    box = guidance.guidance_widget(pipe, steps=2)
    assert "course-guidance" in box._dom_classes
    picture = box.children[1]
    assert "course-picture" in picture._dom_classes
    first = picture.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    controls = box.children[0].children
    scale = next(c for c in controls if c.description == "guidance w")
    scale.value = 0.0
    assert picture.value != first


def test_checks_pass_the_right_answers_including_hidden_cases():
    torch.manual_seed(3)
    state = torch.random.get_rng_state()
    assert lesson05.cfg_combine.run(right_combine, include_hidden=True).passed
    report = lesson05.cfg_sample.run(right_loop, include_hidden=True)
    assert report.passed, str(report)
    assert torch.equal(torch.random.get_rng_state(), state)
    for exercise in lesson05.EXERCISES:
        assert any(case.hidden for case in exercise.cases), exercise.name
        assert len(exercise.mistakes) >= 3 and len(exercise.hints) >= 3, exercise.name


def test_the_library_copy_is_refused():
    report = lesson05.cfg_combine.run(cfg_combine)
    assert {case.status for case in report.cases} == {"missing"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_rules(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata["course"] == {"lesson": "05"}
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    names = {node.targets[0].id for node in ast.parse(parameters[0].source).body}
    assert {"FAST", "FULL_SIZE", "DEVICE", "SEED"} <= names
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert 'check.hint("cfg_combine")' in text and 'check.hint("cfg_sample")' in text
    assert f"{REPO_URL}/blob/main/course/" in text
    assert "arxiv.org/abs/2207.12598" in text  # Ho and Salimans
