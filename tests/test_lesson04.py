"""Lesson 04: mini-CLIP, cross-attention, attention maps, their pictures and the checks."""

import ast
import math
import re

import nbformat
import pytest
import torch
import torch.nn.functional as F

from course import REPO_URL
from course.checks import lesson04
from course.nets import CrossAttention
from course.nets.clip import MiniCLIP, clip_loss, train_clip, zero_shot
from course.tinysd import load_tokenizer
from course.tinysd.attention_maps import (
    TOKEN_ROLES,
    AttentionRecord,
    concentration,
    concentration_by_role,
    mass_inside,
    record_attention,
    shape_mask,
)
from tests.helpers import LESSONS, SOLUTIONS, as_learner

NOTEBOOKS = [p for p in SOLUTIONS + LESSONS if p.name.startswith("04_")]



def right_cross_attention(x, context, to_q, to_k, to_v, to_out, heads):
    b, n, _ = x.shape
    d = to_q.out_features // heads

    def split(t):
        return t.view(b, -1, heads, d).transpose(1, 2)

    q, k, v = split(to_q(x)), split(to_k(context)), split(to_v(context))
    probs = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(dim=-1)
    return to_out((probs @ v).transpose(1, 2).reshape(b, n, heads * d))


# ------------------------------------------------------------------------------------ checks


def test_every_exercise_has_hidden_cases_mistakes_hints_and_oracles():
    for exercise in lesson04.EXERCISES:
        assert any(c.hidden for c in exercise.cases), exercise.name
        assert any(not c.hidden for c in exercise.cases), exercise.name
        assert len(exercise.mistakes) >= 5, exercise.name
        assert len(exercise.hints) >= 3, exercise.name
        assert exercise.oracles, exercise.name


@pytest.mark.parametrize("right", [as_learner(clip_loss), as_learner(lambda **kw: clip_loss(**kw))])
def test_the_right_clip_loss_passes_every_case(right):
    right.__name__ = "clip_loss"
    assert lesson04.clip_loss.run(right, include_hidden=True).passed


def test_the_right_cross_attention_passes_every_case_and_so_does_the_module():
    assert lesson04.cross_attention.run(right_cross_attention, include_hidden=True).passed

    def via_module(x, context, to_q, to_k, to_v, to_out, heads):
        module = CrossAttention(to_q.in_features, to_k.in_features, heads,
                                to_q.out_features // heads)
        module.load_state_dict({"to_q.weight": to_q.weight, "to_k.weight": to_k.weight,
                                "to_v.weight": to_v.weight, "to_out.weight": to_out.weight,
                                "to_out.bias": to_out.bias})
        return module(x, context)

    via_module.__name__ = "cross_attention"
    assert lesson04.cross_attention.run(via_module, include_hidden=True).passed


def test_the_checks_leave_the_global_rng_alone():
    torch.manual_seed(3)
    state = torch.random.get_rng_state()
    for exercise in lesson04.EXERCISES:
        for case in exercise.cases:
            case.make_inputs()
    assert lesson04.cross_attention.run(right_cross_attention, include_hidden=True).passed
    assert torch.equal(torch.random.get_rng_state(), state)


# ------------------------------------------------------------------------------------ nets


def test_cross_attention_module_equals_a_unet_attn2_layer():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    layer = Attention(32, cross_attention_dim=20, heads=4, dim_head=8).eval()
    mine = CrossAttention.from_diffusers(layer)
    x, context = torch.randn(2, 16, 32), torch.randn(2, 7, 20)
    with torch.no_grad():
        out, probs = mine(x, context, return_probs=True)
        assert torch.allclose(out, layer(x, encoder_hidden_states=context), atol=1e-5)
    assert probs.shape == (2, 4, 16, 7)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 16))


def test_cross_attention_self_attention_and_bad_sizes():
    module = CrossAttention(16, heads=2)
    assert module(torch.randn(1, 5, 16)).shape == (1, 5, 16)
    with pytest.raises(ValueError):
        CrossAttention(2, heads=4)


def test_clip_loss_matches_transformers_and_is_low_for_matching_pairs():
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
    scale = torch.tensor(2.0)
    logits = scale.exp() * F.normalize(b, dim=-1) @ F.normalize(a, dim=-1).T
    assert torch.allclose(clip_loss(a, b, scale), image_text_contrastive_loss(logits), atol=1e-6)
    assert clip_loss(a, a * 3, torch.tensor(4.0)) < 0.1  # identical directions: near zero


def test_mini_clip_trains_a_little_and_zero_shot_returns_indices():
    torch.manual_seed(0)
    model = MiniCLIP(load_tokenizer())
    losses = train_clip(model, steps=30, progress=False)
    assert len(losses) == 30 and losses[-1] < losses[0]
    from course.data import shapes_dataset

    images, captions = shapes_dataset(10, seed=5)
    picks = zero_shot(model, images, captions)
    assert picks.shape == (10,) and picks.dtype == torch.long
    similarity = model.similarity(images[:3], captions[:4])
    assert similarity.shape == (3, 4) and similarity.abs().max() <= 1 + 1e-5
    assert model.logit_scale.exp() <= 100 + 1e-3


# ------------------------------------------------------------------------- attention maps


@pytest.fixture(scope="module")
def record():
    from course.models import load_pipeline

    pipe = load_pipeline("tiny-shapes")
    pipe.set_progress_bar_config(disable=True)
    before = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    rec = record_attention(pipe, ["a red circle on the left", "a blue square at the top"],
                           steps=4, seed=0, guidance_scale=2.0)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before
    return rec


def test_record_attention_shapes_and_distributions(record):
    assert isinstance(record, AttentionRecord)
    assert len(record.timesteps) == 4 and record.timesteps[0] > record.timesteps[-1]
    assert record.images.shape == (2, 3, 32, 32)
    maps = record.maps()
    assert maps.shape == (4, 2, 16, 32, 32)
    assert torch.allclose(maps.sum(2), torch.ones(4, 2, 32, 32), atol=1e-4)
    assert len(record.layers) == 7
    labels, own = record.token_maps(0)
    assert labels[:4] == ["<|startoftext|>", "a", "red", "circle"]
    assert labels[-1].startswith("padding") and own.shape == (4, len(labels), 32, 32)
    one = record.maps(record.layers[0])
    assert one.shape == maps.shape
    # one prompt's maps alone are that prompt's slice of all of them, for every layer choice
    for layer in (None, record.layers[0]):
        assert torch.equal(record.maps(layer, prompt_index=1), record.maps(layer)[:, 1:2])


def test_last_layer_follows_the_forward_pass_not_the_module_listing(record):
    # named_modules lists up_blocks before mid_block; the U-Net runs the middle first
    assert record.layers[-1].startswith("mid_block")
    assert record.last_layer(8) == "up_blocks.1.attentions.1.transformer_blocks.0.attn2"
    assert record.last_layer(4) == "up_blocks.0.attentions.1.transformer_blocks.0.attn2"
    with pytest.raises(ValueError, match="no layer with 16x16 maps; the sides here are \\[4, 8\\]"):
        record.last_layer(16)


def test_concentration_by_role_averages_each_kind_of_token(record):
    masks = shape_mask(record.images)
    rows = concentration_by_role(record, masks)
    assert list(rows) == list(TOKEN_ROLES)
    # by hand for the colour word (position 2 of both prompts), all layers and steps
    by_hand = [concentration(record.token_maps(i)[1].mean(0)[2], masks[i]).item() for i in (0, 1)]
    assert rows["colour"] == pytest.approx(sum(by_hand) / 2)
    one_layer = concentration_by_role(record, masks, record.last_layer(8), steps=slice(0, 2))
    assert one_layer != rows and all(math.isfinite(v) and v > 0 for v in one_layer.values())


def test_mask_and_mass(record):
    masks = shape_mask(record.images)
    assert masks.shape == (2, 32, 32) and 0.03 < masks.float().mean() < 0.4
    even = torch.ones(32, 32)
    assert torch.allclose(mass_inside(even, masks[0]), masks[0].float().mean())
    assert torch.allclose(concentration(even, masks[0]), torch.tensor(1.0))


def test_attention_figure_and_widget(record):
    from course.viz.attention import attention_maps_figure, attention_widget, similarity_figure
    from course.viz.plots import figure_to_png

    labels, maps = record.token_maps(0)
    fig = attention_maps_figure(record.images[0], maps, labels, 3, 1, record.timesteps,
                                title="t")
    assert figure_to_png(fig).startswith(b"\x89PNG")
    fig = similarity_figure(torch.rand(3, 4) * 2 - 1, record.images[:1].repeat(3, 1, 1, 1),
                            ["a", "b", "c", "d"])
    assert figure_to_png(fig).startswith(b"\x89PNG")
    widget = attention_widget(None, record=record)
    assert "course-attention" in widget._dom_classes
    picture = widget.children[1]
    assert "course-picture" in picture._dom_classes and bytes(picture.value).startswith(b"\x89PNG")
    token, step, layer = widget.children[0].children
    assert token.label == "circle"
    first = bytes(picture.value)
    layer.value = layer.options[-1][1]
    assert bytes(picture.value) != first


# ------------------------------------------------------------------------------- notebooks


def _markdown(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_links_are_absolute_and_the_parameters_cell_holds_literals(path):
    links = [url for text in _markdown(path) for url in re.findall(r"\]\(([^)\s]+)\)", text)]
    assert [url for url in links if not url.startswith("https://")] == []
    assert any(url.startswith(f"{REPO_URL}/blob/main/course/") for url in links)
    cells = nbformat.read(path, as_version=4).cells
    parameters = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    for node in ast.parse(parameters[0].source).body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    text = "\n".join(_markdown(path))
    assert 'check.hint("clip_loss")' in text and 'check.hint("cross_attention")' in text


def test_the_recording_processor_computes_what_diffusers_does():
    from diffusers.models.attention_processor import Attention

    from course.tinysd.attention_maps import RecordingAttnProcessor

    torch.manual_seed(0)
    layer = Attention(16, cross_attention_dim=16, heads=2, dim_head=8).eval()
    x, context = torch.randn(2, 9, 16), torch.randn(2, 5, 16)
    kept = []
    with torch.no_grad():
        expected = layer(x, encoder_hidden_states=context)
        layer.set_processor(RecordingAttnProcessor("l", lambda n, p: kept.append(p)))
        assert torch.allclose(layer(x, encoder_hidden_states=context), expected, atol=1e-5)
        assert kept[0].shape == (2, 9, 5)
        for slip in ("no_scale", "softmax_over_positions", "keys_from_image"):
            layer.set_processor(RecordingAttnProcessor(slip=slip))
            assert not torch.allclose(layer(x, encoder_hidden_states=context), expected,
                                      atol=1e-3), slip
    with pytest.raises(ValueError):
        RecordingAttnProcessor(slip="nonsense")
