"""The U-Net's parts against diffusers, its config's validation, and the bundled checkpoint."""

import pytest
import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D

from course.models import load_unet, save_unet
from course.nets import TinyUNet, TinyUNetConfig, trace_shapes
from course.nets import unet as unet_module
from course.nets.unet import DownBlock, MidBlock, ResBlock, SelfAttention, UpBlock


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter drawn afresh (zero-initialised layers would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module


# --------------------------------------------------------------------------------------------
# The bundled checkpoint computes what it computed before the U-Net was reorganised
# --------------------------------------------------------------------------------------------

# Computed with the flat-layout TinyUNet (ModuleDict dispatch) that trained the bundled model,
# before the refactor into DownBlock / MidBlock / UpBlock: input randn(2, 3, 32, 32) from a
# generator seeded 1234, t = [17, 803]. On the machine that made them the new code reproduced
# the whole output bit for bit (the same float32 operations in the same order). The file has
# since been re-saved under the block names (the same float16 tensors: max |difference| of the
# outputs 0 on 8 inputs); these numbers still hold.
REFERENCE_SUM = 1231.029296875
REFERENCE_ABS_SUM = 6671.365234375
REFERENCE_0_C_10_10_14 = [
    [-0.875899076461792, 0.03606317192316055, -0.6284944415092468, -0.0546703115105629],
    [0.28135761618614197, -0.6578245162963867, 0.9810435771942139, -1.9825958013534546],
    [-0.7234852313995361, 0.1133614331483841, 1.0907686948776245, 1.3444323539733887]]
REFERENCE_1_C_20_4_8 = [
    [1.0792840719223022, -1.3981993198394775, 0.45598751306533813, -1.1094279289245605],
    [-1.6205425262451172, -0.30972230434417725, -0.02293214201927185, -0.825330376625061],
    [0.7007660269737244, -0.7495433688163757, -0.32059815526008606, 0.06289708614349365]]


def test_bundled_model_gives_the_outputs_of_the_old_layout():
    model = load_unet("ddpm-shapes")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        out = model(x, torch.tensor([17, 803]))
    torch.testing.assert_close(out[0, :, 10, 10:14], torch.tensor(REFERENCE_0_C_10_10_14),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1, :, 20, 4:8], torch.tensor(REFERENCE_1_C_20_4_8),
                               atol=1e-4, rtol=1e-4)
    assert out.sum().item() == pytest.approx(REFERENCE_SUM, rel=1e-4)
    assert out.abs().sum().item() == pytest.approx(REFERENCE_ABS_SUM, rel=1e-5)


def test_bundled_file_holds_the_current_names_and_its_training_record():
    from safetensors import safe_open

    from course.models import ENTRIES, checkpoint_info, checkpoint_path

    path = checkpoint_path("ddpm-shapes")  # its sha256 checked against the registry
    with safe_open(str(path), framework="pt") as handle:
        stored = set(handle.keys())
        assert {handle.get_tensor(k).dtype for k in stored} == {torch.float16}
    assert stored == set(TinyUNet(TinyUNetConfig()).state_dict())
    assert path.stat().st_size == ENTRIES["ddpm-shapes"].size
    info = checkpoint_info("ddpm-shapes")
    assert info["recipe"]["steps"] == 5886 and info["final_loss"] == 0.00257


# two ResBlocks per level, attention at the top level only: unlike the bundled config
TWO_LAYER = TinyUNetConfig(channels=(8, 16), attention=(True, False), layers_per_level=2,
                           time_dim=16, groups=4, heads=2)


def test_new_checkpoints_round_trip_under_the_new_names(tmp_path):
    model = randomise(TinyUNet(TWO_LAYER), 1).eval()
    path = save_unet(model, tmp_path / "two.safetensors", {})
    loaded = load_unet(path)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    half = TinyUNet(TWO_LAYER)  # what float16 storage keeps of the weights
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, torch.tensor([5, 600])),
                                   half.eval()(x, torch.tensor([5, 600])), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# The parts, against diffusers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c_in, c_out", [(16, 16), (8, 16)])
def test_resblock_is_diffusers_resnet_block(c_in, c_out):
    ours = randomise(ResBlock(c_in, c_out, time_dim=12, groups=4), c_in)
    theirs = ResnetBlock2D(in_channels=c_in, out_channels=c_out, temb_channels=12, groups=4,
                           eps=1e-5)  # torch's GroupNorm default; diffusers' is 1e-6
    renamed = {"time_proj": "time_emb_proj", "skip": "conv_shortcut"}
    weights = {}
    for key, value in ours.state_dict().items():
        module, name = key.split(".", 1)
        weights[f"{renamed.get(module, module)}.{name}"] = value
    theirs.load_state_dict(weights, strict=True)
    gen = torch.Generator().manual_seed(1)
    x, t_emb = torch.randn(3, c_in, 8, 8, generator=gen), torch.randn(3, 12, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t_emb), theirs(x, t_emb), atol=1e-5, rtol=1e-5)


def test_self_attention_is_diffusers_attention():
    ours = randomise(SelfAttention(16, heads=4, groups=4), 2)
    theirs = Attention(query_dim=16, heads=4, dim_head=4, norm_num_groups=4, eps=1e-5, bias=True,
                       residual_connection=True, upcast_softmax=True,
                       _from_deprecated_attn_block=True)
    (q, k, v), (qb, kb, vb) = ours.to_qkv.weight.chunk(3), ours.to_qkv.bias.chunk(3)
    theirs.load_state_dict({
        "group_norm.weight": ours.norm.weight, "group_norm.bias": ours.norm.bias,
        "to_q.weight": q, "to_q.bias": qb, "to_k.weight": k, "to_k.bias": kb,
        "to_v.weight": v, "to_v.bias": vb,
        "to_out.0.weight": ours.to_out.weight, "to_out.0.bias": ours.to_out.bias}, strict=True)
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_blocks_are_typed_and_skips_line_up():
    unet = TinyUNet(TinyUNetConfig())
    assert [type(b) for b in unet.down] == [DownBlock] * 3
    assert [type(b) for b in unet.up] == [UpBlock] * 3
    assert isinstance(unet.mid, MidBlock)
    assert [b.downsample is None for b in unet.down] == [False, False, True]
    assert [b.upsample is None for b in unet.up] == [False, False, True]
    # attention where the config asks for it: the lowest level, on both paths
    assert [isinstance(b.attentions[0], SelfAttention) for b in unet.down] == [False, False, True]
    assert [isinstance(b.attentions[0], SelfAttention) for b in unet.up] == [True, False, False]
    h = torch.randn(2, 32, 32, 32)
    t_emb = torch.randn(2, 128)
    out, skips = unet.down[0](h, t_emb)
    assert out.shape == (2, 32, 16, 16) and [s.shape[-1] for s in skips] == [32, 16]


def test_nothing_is_built_twice(monkeypatch):
    built = []
    original = SelfAttention.__init__

    def counting(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(unet_module.SelfAttention, "__init__", counting)
    unet = TinyUNet(TinyUNetConfig())
    used = [m for m in unet.modules() if isinstance(m, SelfAttention)]
    assert len(used) == 4 and len(built) == len(used)  # down 1, middle 1, up 2


def test_the_same_seed_builds_the_same_network():
    torch.manual_seed(0)
    a = TinyUNet(TinyUNetConfig())
    torch.manual_seed(0)
    b = TinyUNet(TinyUNetConfig())
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


# --------------------------------------------------------------------------------------------
# The config checks itself
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(channels=(32, 64), attention=(False, False, True)), "attention has 3 entries"),
    (dict(channels=(), attention=()), "at least one level"),
    (dict(channels=(32, 0, 64)), "must be positive"),
    (dict(groups=8, channels=(32, 60, 64)), r"groups=8 must divide every channel count.*\[60\]"),
    (dict(heads=3), r"heads=3 must divide.*\[64\]"),
    (dict(heads=4, attention=(True, False, False), channels=(30, 60, 60), groups=6),
     r"heads=4 must divide .*\[30\]"),
    (dict(time_dim=127), "time_dim must be even"),
    (dict(layers_per_level=0), "layers_per_level"),
    (dict(dropout=1.0), "dropout"),
])
def test_config_rejects_inconsistent_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TinyUNetConfig(**kwargs)


def test_config_takes_lists_and_round_trips_through_a_dict():
    config = TinyUNetConfig(channels=[16, 32], attention=[0, 1], groups=4)
    assert config.channels == (16, 32) and config.attention == (False, True)
    assert TinyUNetConfig.from_dict(config.to_dict()) == config
    hash(config)  # frozen and hashable, as a recipe's field


def test_trace_shapes_shows_the_skips_saved_and_used_and_removes_its_hooks():
    unet = TinyUNet(TinyUNetConfig()).eval()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    lines, out = trace_shapes(unet, x, t)
    with torch.no_grad():
        assert torch.equal(out, unet(x, t))
    assert [line.split("->")[0].strip() for line in lines] == [
        "x_t", "conv_in", "down[0]", "down[1]", "down[2]", "mid", "up[0]", "up[1]", "up[2]",
        "conv_out"]
    assert lines[2].startswith("down[0]  -> [2, 32, 16, 16]")
    assert "saves [2, 32, 32, 32]" in lines[2]
    saved = sum(line.split("saves", 1)[1].count("[") for line in lines if "saves [" in line)
    used = sum(line.split("uses", 1)[1].count("[") for line in lines if " uses " in line)
    assert saved + 1 == used  # every map the way down saves, plus conv_in's, is used once
    assert lines[-1] == "conv_out -> [2, 3, 32, 32]"
    assert all(not m._forward_hooks for m in unet.modules())
