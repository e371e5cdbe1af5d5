import pytest
import torch
import torch.nn.functional as F

from course.data import (
    COLORS,
    all_combinations,
    caption,
    parse_caption,
    render_shape,
    shapes_dataset,
)
from course.data.shapes import BACKGROUND, SHAPES, draw_shapes
from course.metrics import (
    PROBLEMS,
    analyze_image,
    analyze_images,
    label_components,
    prompt_adherence,
    sample_quality,
)

BACKGROUND_VALUE = torch.tensor(BACKGROUND) / 127.5 - 1


@pytest.fixture(scope="module")
def world():
    """1000 images of every combination, from a seed no other test uses."""
    return shapes_dataset(1000, seed=2024, split="all")


@pytest.fixture(scope="module")
def noise():
    return torch.randn(300, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def blank(n: int = 1) -> torch.Tensor:
    return BACKGROUND_VALUE.view(1, 3, 1, 1).expand(n, 3, 32, 32).clone()


def test_adherence_is_near_perfect_on_the_world(world):
    result = prompt_adherence(*world)
    assert result["n"] == 1000
    for key in ("color", "shape", "position", "all", "clean"):
        assert 0.99 <= result[key] <= 1


def test_adherence_is_near_perfect_on_heldout_combinations():
    result = prompt_adherence(*shapes_dataset(300, seed=2025, split="heldout"))
    assert result["all"] >= 0.99


def test_analysis_reads_every_combination():
    combos = all_combinations()
    images = torch.stack([render_shape(combo, jitter=False) for combo in combos])
    for combo, found in zip(combos, analyze_images(images)):
        assert found["clean"] and found["problem"] is None
        assert (found["color"], found["shape"], found["position"]) == combo


def test_adherence_is_near_chance_on_noise(world, noise):
    result = prompt_adherence(noise, world[1][: len(noise)])
    assert result["all"] < 0.05
    assert result["clean"] == 0


def test_wrong_captions_give_low_adherence(world):
    images, captions = world[0][:300], world[1][:300]
    shifted = captions[1:] + captions[:1]  # each image gets its neighbour's caption
    assert prompt_adherence(images, shifted)["all"] < 0.1
    # the colour alone changed: colour is judged wrong, shape and position still right
    recoloured = []
    for text in captions:
        attrs = parse_caption(text)
        attrs["color"] = COLORS[(COLORS.index(attrs["color"]) + 1) % len(COLORS)]
        recoloured.append(caption(attrs))
    result = prompt_adherence(images, recoloured)
    assert result["color"] == 0 and result["all"] == 0
    assert result["shape"] >= 0.99 and result["position"] >= 0.99


def test_sample_quality_on_the_world_and_on_noise(world, noise):
    images = world[0][:500]
    quality = sample_quality(images)
    assert quality["n"] == 500 and quality["clean"] >= 0.99
    clean_count = round(quality["clean"] * 500)
    for key in ("colors", "shapes", "positions"):
        assert sum(quality[key].values()) == clean_count
        assert min(quality[key].values()) > 0  # every colour, shape and place is there
    assert quality["clean"] + sum(quality[name] for name in PROBLEMS) == pytest.approx(1)
    noisy = sample_quality(noise)
    assert noisy["clean"] <= 0.01
    assert noisy["clean"] + sum(noisy[name] for name in PROBLEMS) == pytest.approx(1)


def test_blank_background_has_no_shape():
    found = analyze_image(blank()[0])
    assert not found["clean"] and found["problem"] == "no_shape"
    assert found["color"] is found["shape"] is found["position"] is None
    assert sample_quality(blank(4))["no_shape"] == 1


def test_two_shapes_are_not_clean():
    left = render_shape({"color": "red", "shape": "circle", "position": "left"})
    right = render_shape({"color": "blue", "shape": "square", "position": "right"})
    pasted = torch.where((right - BACKGROUND_VALUE.view(3, 1, 1)).abs() > 0.01, right, left)
    found = analyze_image(pasted)
    assert not found["clean"] and found["problem"] == "several_shapes" and found["n_blobs"] == 2
    averaged = analyze_image((left + right) / 2)
    assert not averaged["clean"] and averaged["problem"] == "several_shapes"


def test_off_palette_colour_is_unknown():
    orange = torch.tensor([[240, 140, 30]]) / 127.5 - 1  # between red and yellow, neither
    circle = torch.tensor([SHAPES.index("circle")])
    image = draw_shapes(circle, torch.tensor([[16.0, 16.0]]), torch.tensor([12.0]), orange)[0]
    found = analyze_image(image)
    assert not found["clean"] and found["problem"] == "unknown_color"
    assert found["color"] is None
    assert found["shape"] == "circle" and found["position"] == "center"  # the rest is still read


def test_purple_is_a_known_colour_beside_blue_and_red():
    circle = torch.tensor([SHAPES.index("circle")])
    for rgb, name in (((150, 60, 210), "purple"), ((45, 90, 225), "blue"), ((215, 45, 45), "red")):
        colour = torch.tensor([rgb]) / 127.5 - 1
        image = draw_shapes(circle, torch.tensor([[16.0, 16.0]]), torch.tensor([12.0]), colour)[0]
        assert analyze_image(image)["color"] == name


def test_stray_pixels_are_not_clean():
    image = render_shape({"color": "green", "shape": "triangle", "position": "bottom"}).clone()
    for row, col in [(2, 2), (2, 29), (6, 15), (12, 3), (14, 28), (29, 2)]:
        image[:, row, col] = 1.0  # single white specks, far from the shape
    found = analyze_image(image)
    assert not found["clean"] and found["problem"] == "stray_pixels"
    assert found["stray"] == 6 and found["n_blobs"] == 1
    assert found["shape"] == "triangle"  # specks do not hide the shape


def test_analysis_survives_a_mild_blur(world):
    images, captions = world[0][:300], world[1][:300]
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    assert prompt_adherence(blurred, captions)["all"] >= 0.97


def test_label_components_finds_connected_groups():
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 1, 1] = True  # diagonal neighbours: one group
    mask[0, 4:, 4:] = True  # a 2x2 block
    mask[0, 0, 5] = True  # a lone pixel
    labels = label_components(mask)[0]
    assert labels[0, 0] == labels[1, 1] != 0
    assert len(set(labels[mask[0]].tolist())) == 3
    assert (labels[~mask[0]] == 0).all()


def test_inputs_are_checked(world):
    images, captions = world
    with pytest.raises(ValueError, match="captions"):
        prompt_adherence(images[:3], captions[:2])
    with pytest.raises(ValueError, match="captions read"):
        prompt_adherence(images[:1], ["an orange circle on the left"])
    with pytest.raises(ValueError, match="square RGB"):
        analyze_images(torch.zeros(2, 1, 32, 32))


def test_attribute_spread_is_zero_for_copies_and_grows_with_what_differs():
    from course.data.shapes import Combo, render_combinations
    from course.metrics import attribute_spread

    one = render_combinations([Combo("red", "circle", "center")], seed=0)
    copies = attribute_spread(one.expand(8, -1, -1, -1))
    assert copies == {"size": 0.0, "position": 0.0, "shade": 0.0}
    places = render_combinations([Combo("red", "circle", p) for p in ("left", "right", "top",
                                                                      "bottom")], seed=0)
    colours = render_combinations([Combo(c, "circle", "center") for c in ("red", "blue",
                                                                          "green", "yellow")])
    assert attribute_spread(places)["position"] > 5.0  # pixels: the anchors lie ~8 px apart
    assert attribute_spread(colours)["shade"] > 10 * attribute_spread(places)["shade"]
