"""LoRA: the from-scratch layer against peft, counting at SD 1.5 scale, the adapters' files and
their errors, the purple and outline worlds and their judge, and a short training run."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from course.data.shapes import (
    ALL_COLORS,
    COLORS,
    Combo,
    autoencoder_dataset,
    caption,
    parse_caption,
    render_combinations,
    shapes_dataset,
)
from course.lora import (
    AdapterError,
    LoRALinear,
    adapter_file,
    bundled_adapters,
    load_adapter,
    loaded_adapters,
    lora_parameter_count,
    matches_target,
    sd15_unet,
    set_adapter_strengths,
)
from course.metrics import analyze_images, prompt_adherence
from course.models.registry import ASSETS, ENTRIES


def _peft_layer(base: nn.Linear, r, alpha, rslora, A, B):
    """peft's LoRA around a copy of ``base`` with these A and B."""
    from peft import LoraConfig, inject_adapter_in_model

    container = nn.ModuleDict({"layer": nn.Linear(base.in_features, base.out_features,
                                                  dtype=base.weight.dtype)})
    container.layer.load_state_dict(base.state_dict())
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora,
                                       target_modules=["layer"], init_lora_weights=False),
                            container)
    with torch.no_grad():
        container.layer.lora_A["default"].weight.copy_(A)
        container.layer.lora_B["default"].weight.copy_(B)
    return container.layer


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("shape", [(16, 16, 4), (24, 10, 1), (7, 33, 3)])
def test_lora_linear_matches_peft_forward_and_merge(rslora, shape):
    d_in, d_out, r = shape
    torch.manual_seed(0)
    base = nn.Linear(d_in, d_out)
    layer = LoRALinear(base, r, alpha=6.0, rslora=rslora)
    assert layer.scale == pytest.approx(6.0 / (math.sqrt(r) if rslora else r))
    with torch.no_grad():
        layer.lora_B.normal_()
    theirs = _peft_layer(base, r, 6.0, rslora, layer.lora_A, layer.lora_B)
    x = torch.randn(3, 5, d_in)
    torch.testing.assert_close(layer(x), theirs(x))
    original = base.weight.clone()
    layer.merge()
    theirs.merge()
    torch.testing.assert_close(base.weight, theirs.base_layer.weight)
    torch.testing.assert_close(layer(x), theirs(x))
    layer.unmerge()
    torch.testing.assert_close(base.weight, original)


def test_lora_linear_starts_as_the_base_and_trains_only_a_and_b():
    base = nn.Linear(8, 6)
    layer = LoRALinear(base, 2, 2.0)
    x = torch.randn(4, 8)
    assert torch.equal(layer(x), base(x))  # B = 0
    assert sorted(n for n, p in layer.named_parameters() if p.requires_grad) == \
        ["lora_A", "lora_B"]
    assert layer.lora_A.abs().sum() > 0
    with torch.no_grad():
        layer.lora_B.normal_()
    original, before = base.weight.clone(), layer(x)
    layer.merge()
    layer.merge()  # a second merge must not add the update twice
    torch.testing.assert_close(layer(x), before)
    layer.unmerge()
    torch.testing.assert_close(base.weight, original)
    with pytest.raises(TypeError):
        LoRALinear(nn.Conv2d(3, 3, 1), 2, 2.0)
    with pytest.raises(ValueError):
        LoRALinear(base, 0, 2.0)


def test_lora_linear_float64():
    base = nn.Linear(5, 4, dtype=torch.float64)
    layer = LoRALinear(base, 2, 4.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    theirs = _peft_layer(base, 2, 4.0, False, layer.lora_A, layer.lora_B)
    x = torch.randn(2, 5, dtype=torch.float64)
    assert layer(x).dtype == torch.float64
    torch.testing.assert_close(layer(x), theirs(x))


def test_sd15_unet_counts_like_peft_without_weights():
    unet = sd15_unet()
    assert next(unet.parameters()).device.type == "meta"
    counted = lora_parameter_count(unet, 4)
    assert counted["total"] == 859_520_964  # SD 1.5's U-Net
    assert counted["trainable"] == 797_184 and counted["layers"] == 128
    assert 0.0009 < counted["share"] < 0.00095
    unet.add_adapter(__import__("course.lora", fromlist=["lora_config"]).lora_config(4))
    assert sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n) == 797_184


def test_matches_target_is_peft_suffix_rule():
    assert matches_target("a.attn1.to_out.0", ["to_out.0"])
    assert not matches_target("a.attn1.to_out.0.x", ["to_out.0"])
    assert not matches_target("a.my_to_k", ["to_k"])
    assert matches_target("to_k", ["to_k"])


# --------------------------------------------------------------------------------------------
# The new colour, the outline style, and the judge
# --------------------------------------------------------------------------------------------


def test_purple_captions_and_judge():
    assert "purple" in ALL_COLORS and "purple" not in COLORS
    assert parse_caption("a purple circle on the left")["color"] == "purple"
    combos = [Combo("purple", s, p) for s in ("circle", "square", "triangle")
              for p in ("left", "right", "top", "bottom", "center")]
    images = render_combinations(combos, seed=3)
    assert prompt_adherence(images, [caption(c) for c in combos])["all"] == 1.0
    _, train_captions = shapes_dataset(600, seed=0)
    assert not any("purple" in c for c in train_captions)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outline_style_is_judged(seed):
    from course.data.shapes import all_combinations

    combos = all_combinations()
    outlined = render_combinations(combos, seed=seed, style="outline")
    filled = render_combinations(combos, seed=seed)
    captions = [caption(c) for c in combos]
    assert prompt_adherence(outlined, captions, style="outline")["all"] >= 59 / 60
    assert prompt_adherence(filled, captions, style="filled")["all"] == 1.0
    assert prompt_adherence(filled, captions, style="outline")["style"] == 0.0
    # outlines keep the less-filled look: less foreground than the filled shape
    assert (outlined != filled).any()


def test_autoencoder_dataset_has_new_colours_and_outlines():
    images = autoencoder_dataset(256, seed=0)
    assert images.shape == (256, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    found = analyze_images(images)
    assert sum(f["style"] == "outline" for f in found) > 30
    assert torch.equal(images, autoencoder_dataset(256, seed=0))


# --------------------------------------------------------------------------------------------
# Adapter files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    from course.models import load_pipeline

    return load_pipeline("tiny-shapes", device="cpu", dtype=torch.float32)


def test_bundled_adapters_are_small_safetensors(monkeypatch):
    assert bundled_adapters() == ["outline", "purple"]
    for name in bundled_adapters():
        path = adapter_file(name)
        assert path.suffix == ".safetensors" and path.stat().st_size <= 256 * 1024
        assert path.parent == ASSETS / "adapters" / name
    # a bundled adapter is checked against its registry digest before it is read
    damaged = replace(ENTRIES["purple"], sha256="0" * 64)
    monkeypatch.setitem(ENTRIES, "purple", damaged)
    with pytest.raises(ValueError, match="do not match the registry"):
        adapter_file("purple")


def test_bad_adapters_get_one_line_errors(pipe, tmp_path):
    from safetensors.torch import save_file

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "pytorch_lora_weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_lora_weights.bin").write_bytes(b"\x80\x04")
    other = tmp_path / "other"
    other.mkdir()
    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 320),
               f"{key}.lora_B.weight": torch.zeros(320, 4)},
              str(other / "pytorch_lora_weights.safetensors"))
    expected = {corrupt: "not a readable safetensors file", pickled: "no .safetensors",
                other: "made for another model", pickled / "pytorch_lora_weights.bin":
                "safetensors files only"}
    for target, words in expected.items():
        with pytest.raises(AdapterError) as caught:
            load_adapter(pipe, target, "x")
        message = str(caught.value)
        assert words in message and str(target.parent if target.is_file() else target) in \
            message and "\n" not in message
    assert loaded_adapters(pipe) == []
    with pytest.raises(AdapterError, match="no adapter named 'nope'"):
        set_adapter_strengths(pipe, {"nope": 1.0})


def test_bundled_adapters_load_mix_and_leave_the_base_exact(pipe):
    from course.tinysd.evaluate import generate

    prompts = ["a red circle on the left", "a purple square at the top"]
    before = generate(pipe, prompts, 1.0, 6, seed=0)
    for name in ("purple", "outline"):
        load_adapter(pipe, name, name)
    assert loaded_adapters(pipe) == ["outline", "purple"]
    with pytest.raises(AdapterError, match="already loaded"):
        load_adapter(pipe, "purple", "purple")
    set_adapter_strengths(pipe, {"purple": 1.0, "outline": 1.0})
    both = generate(pipe, prompts, 1.0, 6, seed=0)
    assert (both - before).abs().max() > 0.1
    set_adapter_strengths(pipe, {"purple": 0.0, "outline": 0.0})
    assert torch.equal(generate(pipe, prompts, 1.0, 6, seed=0), before)
    with pytest.raises(AdapterError, match="finite"):
        set_adapter_strengths(pipe, {"purple": float("nan")})
    pipe.unload_lora_weights()
    assert loaded_adapters(pipe) == []
    assert torch.equal(generate(pipe, prompts, 1.0, 6, seed=0), before)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def test_short_lora_training_saves_a_loadable_adapter(tmp_path, pipe):
    from course.training.adapters import save_adapter
    from course.training.lora import LoRARecipe, train_adapter

    recipe = LoRARecipe(adapter="outline", rank=2, alpha=2.0, text_encoder_rank=2, steps=4,
                        batch_size=8)  # targets: cross-attention and top-level convolutions
    from course.models import load_pipeline

    trained = train_adapter(recipe, load_pipeline("tiny-shapes", device="cpu",
                                                  dtype=torch.float32), progress=False,
                            device="cpu")
    counts = trained.record["parameters"]
    assert counts["unet_lora"] > 0 and counts["text_encoder_lora"] > 0
    assert counts["unet_share"] < 0.01
    frozen = [n for n, p in trained.pipe.unet.named_parameters() if "lora_" not in n]
    assert frozen and all(not p.requires_grad for p in trained.pipe.unet.parameters())
    path = save_adapter(trained.pipe, tmp_path / "adapter", trained.record)
    assert (tmp_path / "adapter" / "training.json").is_file()
    load_adapter(pipe, tmp_path / "adapter", "fresh")
    assert loaded_adapters(pipe) == ["fresh"]
    # every trained LoRA weight comes back (float16 in the file), attention and convolutions
    for network in ("unet", "text_encoder"):
        trained_weights = {n.replace(".default.", "."): p for n, p in
                           getattr(trained.pipe, network).named_parameters() if "lora_" in n}
        loaded = {n.replace(".fresh.", "."): p for n, p in
                  getattr(pipe, network).named_parameters() if "lora_" in n}
        assert loaded.keys() == trained_weights.keys() and loaded
        for name, value in trained_weights.items():
            torch.testing.assert_close(loaded[name], value.half().float(), atol=0, rtol=0)
        if network == "unet":
            assert any("attn2" in n for n in loaded) and any("conv" in n for n in loaded)
    pipe.unload_lora_weights()
    assert path.stat().st_size < 256 * 1024


def test_adapter_measurements_are_judged_from_the_same_noise(pipe):
    from course.tinysd import lora_eval

    for name in ("purple", "outline"):
        load_adapter(pipe, name, name)
    try:
        result = lora_eval.measure_adapter(pipe, "purple", seeds=1, base_seeds=1)
        assert result["strength_0_exact"] is True
        assert result["new"]["n"] == 8 and result["base"]["n"] == 60
        assert result["forgetting"] == pytest.approx(
            result["base_without"]["all"] - result["base"]["all"], abs=1e-4)
        both = lora_eval.measure_both(pipe, seeds=1)
        assert both["n"] == 15 and "style" in both
    finally:
        pipe.unload_lora_weights()
