from collections import Counter

import pytest
import torch

from course.data import (
    COLORS,
    HELDOUT,
    POSITIONS,
    SHAPES,
    Combo,
    all_combinations,
    caption,
    parse_caption,
    render_shape,
    shapes_dataset,
)
from course.data.shapes import BACKGROUND, PALETTE

BACKGROUND_VALUE = torch.tensor(BACKGROUND) / 127.5 - 1


def foreground(image: torch.Tensor) -> torch.Tensor:
    """Bool [H, W]: pixels clearly away from the background."""
    return (image - BACKGROUND_VALUE.view(3, 1, 1)).norm(dim=0) > 0.5


def test_dataset_images_are_model_ready():
    images, captions = shapes_dataset(64, seed=1)
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert len(captions) == 64 and all(isinstance(text, str) for text in captions)
    bigger, _ = shapes_dataset(4, seed=1, size=48)
    assert bigger.shape == (4, 3, 48, 48)
    empty, no_captions = shapes_dataset(0)
    assert empty.shape == (0, 3, 32, 32) and no_captions == []


def test_dataset_is_deterministic_by_seed():
    images, captions = shapes_dataset(40, seed=3)
    again, captions_again = shapes_dataset(40, seed=3)
    other, other_captions = shapes_dataset(40, seed=4)
    assert torch.equal(images, again) and captions == captions_again
    assert not torch.equal(images, other) and captions != other_captions


def test_all_shows_every_combination_equally_often():
    _, captions = shapes_dataset(180, seed=5, split="all")
    counts = Counter(captions)
    assert set(counts) == {caption(combo) for combo in all_combinations()}
    assert set(counts.values()) == {3}


def test_train_and_heldout_splits_respect_the_heldout_set():
    _, train = shapes_dataset(540, seed=6, split="train")
    _, heldout = shapes_dataset(60, seed=6, split="heldout")
    train_combos = {Combo(**parse_caption(text)) for text in train}
    heldout_combos = {Combo(**parse_caption(text)) for text in heldout}
    assert not train_combos & set(HELDOUT)
    assert len(train_combos) == 60 - len(HELDOUT)
    assert heldout_combos == set(HELDOUT)


def test_heldout_set_leaves_every_attribute_in_training():
    assert len(set(HELDOUT)) == len(HELDOUT) == 6
    assert set(HELDOUT) <= set(all_combinations())
    train = [combo for combo in all_combinations() if combo not in HELDOUT]
    assert {combo.color for combo in train} == set(COLORS)
    assert {combo.shape for combo in train} == set(SHAPES)
    assert {combo.position for combo in train} == set(POSITIONS)
    # every colour-shape pair too, so a held-out combination only needs a new place
    pairs = {(combo.color, combo.shape) for combo in train}
    assert pairs == {(color, shape) for color in COLORS for shape in SHAPES}


def test_the_world_has_the_promised_attributes():
    assert len(COLORS) >= 4 and SHAPES == ("circle", "square", "triangle")
    assert POSITIONS == ("left", "right", "top", "bottom", "center")
    assert len(all_combinations()) == len(set(all_combinations())) == 60


def test_caption_and_parse_caption_are_inverses():
    texts = [caption(combo) for combo in all_combinations()]
    assert len(set(texts)) == 60
    for combo, text in zip(all_combinations(), texts):
        assert parse_caption(text) == combo._asdict()
        assert caption(parse_caption(text)) == text
    assert caption({"color": "red", "shape": "circle", "position": "left"}) == (
        "a red circle on the left"
    )
    assert caption(Combo("blue", "triangle", "top")) == "a blue triangle at the top"
    assert parse_caption("  A Green   square IN the center ")["shape"] == "square"


@pytest.mark.parametrize(
    "text",
    [
        "an orange circle on the left",
        "hello",
        "",
        "a red circle",
        "red circle on the left",
        "a red circle on the left, please",
        "a red hexagon in the center",
        "a red circle in the middle",
    ],
)
def test_parse_caption_rejects_text_outside_the_grammar(text):
    with pytest.raises(ValueError, match="captions read"):
        parse_caption(text)


def test_caption_rejects_unknown_attributes():
    with pytest.raises(ValueError, match="not a combination"):
        caption({"color": "orange", "shape": "circle", "position": "left"})
    with pytest.raises(ValueError, match="split"):
        shapes_dataset(4, split="test")


def test_jitter_varies_images_with_the_same_caption():
    attrs = {"color": "green", "shape": "square", "position": "top"}
    renders = torch.stack([render_shape(attrs, seed=seed) for seed in range(8)])
    areas = {int(foreground(image).sum()) for image in renders}
    colours = renders[:, :, 8, 16]  # a pixel inside every one of them
    assert len(areas) >= 4  # sizes differ
    assert colours.std(0).max() > 0.01  # colours differ
    assert torch.equal(render_shape(attrs, seed=3), render_shape(attrs, seed=3))
    # without jitter, every seed gives the same canonical picture
    assert torch.equal(
        render_shape(attrs, seed=0, jitter=False), render_shape(attrs, seed=9, jitter=False)
    )
    generator = torch.Generator().manual_seed(0)
    assert not torch.equal(
        render_shape(attrs, generator=generator), render_shape(attrs, generator=generator)
    )


def test_render_shape_draws_what_it_is_asked_for():
    red_left = render_shape({"color": "red", "shape": "circle", "position": "left"}, jitter=False)
    assert red_left.shape == (3, 32, 32)
    mask = foreground(red_left)
    assert mask[:, :16].sum() > 10 * mask[:, 16:].sum()  # on the left
    assert 0.6 < mask.sum() / 144 < 1  # a disc of about 12 px across
    red = torch.tensor(PALETTE["red"]) / 127.5 - 1
    assert torch.allclose(red_left[:, 16, 9], red, atol=1e-6)  # its middle is pure red
    assert torch.allclose(red_left[:, 0, 31], BACKGROUND_VALUE)  # a far corner is background

    triangle = render_shape({"color": "blue", "shape": "triangle", "position": "center"})
    rows = foreground(triangle).sum(1)
    filled = rows.nonzero().flatten()
    assert rows[filled[0]] < rows[filled[-1]] / 3  # narrow at the top: it points up


def test_anti_aliased_edges():
    image = render_shape({"color": "yellow", "shape": "circle", "position": "center"}, jitter=False)
    yellow = torch.tensor(PALETTE["yellow"]) / 127.5 - 1
    share = (image - BACKGROUND_VALUE.view(3, 1, 1)).norm(dim=0) / (
        yellow - BACKGROUND_VALUE
    ).norm()
    partial = ((share > 0.05) & (share < 0.95)).sum()
    assert partial >= 16  # the rim is blended, not a hard staircase
