"""The training package's shared pieces and its command line: recipes as JSON, the caller's random
state left alone, one RECIPES table behind ``python -m course train``."""

import json
from dataclasses import replace

import pytest
import torch

from course.__main__ import main
from course.nets import TinyUNetConfig
from course.training import RECIPES
from course.training.ddpm import DDPMRecipe, train_ddpm
from course.training.lora import TOP_LEVEL_CONVS, LoRARecipe
from course.training.seeding import seeded
from course.training.tiny_sd import TinySDRecipe

SMALL = TinyUNetConfig(channels=(8, 16), attention=(False, True), time_dim=32, groups=4, heads=2)


@pytest.mark.parametrize("recipe", [
    DDPMRecipe(steps=7, unet=SMALL),
    replace(TinySDRecipe(), stop_after=250, vae_from="tiny-shapes", caption_noise=0.35),
    replace(TinySDRecipe(), objective="flow", time_sampling="uniform", flow_shift=3.0),
    LoRARecipe.for_adapter("outline", extra={"full_lr": 1e-4}),
])
def test_recipes_round_trip_through_json(recipe):
    again = type(recipe).from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe
    if isinstance(recipe, LoRARecipe):
        assert again.targets == TOP_LEVEL_CONVS and isinstance(again.targets, tuple)


def test_training_leaves_the_callers_random_state_alone():
    images = torch.rand(32, 3, 8, 8) * 2 - 1
    recipe = DDPMRecipe(steps=3, batch_size=8, warmup_steps=1, unet=SMALL)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = train_ddpm(recipe, images=images, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    # the seed alone decides the weights, whatever the caller's state
    torch.manual_seed(456)
    second = train_ddpm(recipe, images=images, progress=False)
    for name, value in first.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], value, rtol=0, atol=0)
    other = train_ddpm(replace(recipe, seed=1), images=images, progress=False)
    assert not torch.equal(other.model.conv_out.weight, first.model.conv_out.weight)


def test_seeded_draws_what_manual_seed_would_and_restores_the_state():
    torch.manual_seed(5)
    expected = torch.randn(4)
    state = torch.get_rng_state()
    with seeded(5):
        drawn = torch.randn(4)
    assert torch.equal(drawn, expected) and torch.equal(torch.get_rng_state(), state)


def test_train_help_lists_every_recipe_and_each_recipe_its_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in RECIPES) and set(RECIPES) == {
        "ddpm-shapes", "tiny-sd", "tiny-sd-flow", "reflow", "lora"}
    for name, option in [("tiny-sd", "--caption-noise"), ("tiny-sd", "--vae-from"),
                         ("tiny-sd-flow", "--time-sampling"), ("tiny-sd-flow", "--vae-from"),
                         ("tiny-sd", "--stop-after"), ("lora", "--adapter"),
                         ("ddpm-shapes", "--snapshot-every"), ("reflow", "--pair-guidance")]:
        with pytest.raises(SystemExit):
            main(["train", name, "--help"])
        assert option in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["train", "no-such-recipe"])
    assert exit_.value.code == 2
