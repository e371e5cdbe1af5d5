"""The U-Net, the reverse steps, the sampling loops, training and checkpoints."""

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.models.embeddings import get_timestep_embedding

from course.__main__ import main
from course.diffusion import alpha_bars, ddim_step, ddpm_step, make_beta_schedule, predict_x0
from course.models import checkpoint_info, load_unet, save_unet
from course.nets import TinyUNet, TinyUNetConfig, timestep_embedding
from course.sampling import ddim_sample, ddpm_sample, module_schedulers, respace, scheduler_sample
from course.training.ddpm import DDPMRecipe, ddpm_loss, train_ddpm

SMALL = TinyUNetConfig(channels=(8, 16), attention=(False, True), time_dim=32, groups=4, heads=2)


def test_timestep_embedding_matches_diffusers():
    t = torch.tensor([0, 3, 250, 999])
    expected = get_timestep_embedding(t, 64, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(timestep_embedding(t, 64), expected)
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(t, 7)


def test_unet_maps_images_to_noise_shaped_outputs():
    unet = TinyUNet(TinyUNetConfig())
    x = torch.randn(3, 3, 32, 32)
    out = unet(x, torch.tensor([0, 500, 999]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output layer
    assert 0.9e6 < sum(p.numel() for p in unet.parameters()) < 1.5e6
    # timesteps change the answer once the output layer is trained away from zero
    torch.nn.init.normal_(unet.conv_out.weight, std=0.1)
    a, b = unet(x[:1], torch.tensor([10])), unet(x[:1], torch.tensor([900]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("t", [999, 400, 1, 0])
def test_ddpm_step_matches_diffusers(t):
    betas = make_beta_schedule("linear", 1000)
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    gen = torch.Generator().manual_seed(t)
    x, eps = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    expected = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(7)).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ddpm_step(x, eps, t, betas, noise=z), expected, atol=5e-4,
                               rtol=1e-3)
    with pytest.raises(ValueError):
        ddpm_step(x, eps, 1000, betas)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_diffusers(eta):
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    scheduler.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    x, eps, z = (torch.randn(2, 3, 8, 8, generator=gen) for _ in range(3))
    for t in scheduler.timesteps.tolist():
        prev = t - 100
        a_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        expected = scheduler.step(eps, t, x, eta=eta, variance_noise=z).prev_sample
        got = ddim_step(x, eps, scheduler.alphas_cumprod[t], a_prev, eta=eta, noise=z)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_predict_x0_inverts_the_forward_jump():
    alpha_bar = torch.tensor([0.9, 0.1])
    x0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    x_t = alpha_bar.sqrt().view(-1, 1, 1, 1) * x0 + (1 - alpha_bar).sqrt().view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(predict_x0(x_t, eps, alpha_bar), x0, atol=1e-5, rtol=1e-5)


def test_respace_keeps_alpha_bar_at_the_kept_steps():
    betas = make_beta_schedule("linear", 1000)
    kept, chain = respace(betas, 50)
    assert kept[0] == 0 and kept[-1] == 999 and len(kept) == 50
    torch.testing.assert_close(alpha_bars(chain.double()), alpha_bars(betas.double())[kept],
                               atol=1e-6, rtol=1e-5)
    assert torch.equal(respace(betas, 1000)[1], betas)


class Oracle(torch.nn.Module):
    """The ideal denoiser when every image is the constant image c: eps = (x_t - sqrt(a) c) / ..."""

    def __init__(self, betas, value=0.5):
        super().__init__()
        self.register_buffer("alpha_bar", alpha_bars(betas.double()).float())
        self.value = value
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        a = self.alpha_bar[t.round().long()].view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.value) / (1 - a).sqrt()


def test_samplers_recover_the_data_with_a_perfect_model():
    betas = make_beta_schedule("linear", 1000)
    model = Oracle(betas)
    images, trajectory = ddpm_sample(model, 4, betas, size=8, steps=100, snapshots=5,
                                     generator=torch.Generator().manual_seed(0), progress=False)
    assert (images - 0.5).abs().max() < 0.05
    assert trajectory.x_t.shape == (6, 4, 3, 8, 8) and trajectory.timesteps[-1] == -1
    start = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert (ddim_sample(model, start, betas, steps=20) - 0.5).abs().max() < 1e-3
    assert torch.equal(ddim_sample(model, start, betas, steps=20),
                       ddim_sample(model, start, betas, steps=20))


@pytest.mark.parametrize("kind", [DDPMScheduler, DDIMScheduler, PNDMScheduler,
                                  EulerDiscreteScheduler, DPMSolverMultistepScheduler])
def test_scheduler_sample_works_with_every_scheduler(kind):
    betas = make_beta_schedule("linear", 1000)
    scheduler = kind(num_train_timesteps=1000, beta_schedule="linear")
    images = scheduler_sample(Oracle(betas), scheduler, 2, 20, size=8,
                              generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 8, 8)
    assert (images - 0.5).abs().max() < 0.1, kind.__name__


def test_module_schedulers_include_the_stochastic_dpm_solver():
    schedulers = module_schedulers()
    assert list(schedulers) == ["DDPM", "DDIM", "PNDM", "Euler", "DPM-Solver++",
                                "DPM-Solver++ (SDE)"]
    deterministic = schedulers["DPM-Solver++"](num_train_timesteps=1000)
    stochastic = schedulers["DPM-Solver++ (SDE)"](num_train_timesteps=1000)
    assert deterministic.config.algorithm_type == "dpmsolver++"
    assert stochastic.config.algorithm_type == "sde-dpmsolver++"
    betas = make_beta_schedule("linear", 1000)
    # the SDE variant draws fresh noise: another generator, another image
    first, second = (scheduler_sample(Oracle(betas), schedulers["DPM-Solver++ (SDE)"](), 1, 10,
                                      size=8, generator=torch.Generator().manual_seed(seed))
                     for seed in (0, 1))
    assert not torch.equal(first, second)


def test_ddpm_loss_is_a_differentiable_scalar():
    betas = make_beta_schedule("linear", 1000)
    model = TinyUNet(SMALL)
    loss = ddpm_loss(model, torch.zeros(4, 3, 8, 8), betas, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and loss.requires_grad
    assert loss.item() == pytest.approx(1.0, abs=0.3)  # zero output: the loss is Var(noise)


def test_training_lowers_the_loss_and_round_trips_through_safetensors(tmp_path):
    images = torch.zeros(64, 3, 8, 8) + 0.5  # a trivially learnable world
    recipe = DDPMRecipe(steps=40, batch_size=16, lr=3e-3, warmup_steps=5, unet=SMALL)
    result = train_ddpm(recipe, images=images, progress=False)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.7 * first
    path = save_unet(result.model, tmp_path / "tiny.safetensors", {"final_loss": last})
    loaded = load_unet(path)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 700])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), result.model(x, t), atol=2e-2, rtol=1e-2)
    assert checkpoint_info(path)["final_loss"] == pytest.approx(last)
    raw = path.read_bytes()  # safetensors: u64 header length, then a JSON header, then tensors
    header_length = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and 8 + header_length < len(raw)


def test_a_snapshot_at_step_k_is_the_k_step_run():
    images = torch.rand(64, 3, 8, 8) * 2 - 1
    recipe = DDPMRecipe(steps=6, batch_size=16, warmup_steps=2, unet=SMALL)
    snapshots = {}

    def keep(step, ema, losses, seconds):
        snapshots[step] = {k: v.clone() for k, v in ema.state_dict().items()}

    train_ddpm(recipe, images=images, progress=False, on_step=keep)
    short = train_ddpm(DDPMRecipe(steps=3, batch_size=16, warmup_steps=2, unet=SMALL),
                       images=images, progress=False)
    for name, value in short.model.state_dict().items():
        torch.testing.assert_close(snapshots[3][name], value, rtol=0, atol=0)
    assert not torch.equal(snapshots[3]["conv_out.weight"], snapshots[6]["conv_out.weight"])


def test_time_limit_stops_early_and_records_the_steps_taken():
    recipe = DDPMRecipe(steps=1000, batch_size=8, unet=SMALL)
    result = train_ddpm(recipe, images=torch.zeros(32, 3, 8, 8), progress=False, time_limit=0.0)
    assert len(result.losses) == 1 and result.recipe.steps == 1 and recipe.steps == 1000
    assert result.device == "cpu"


def test_train_command_writes_snapshots_that_record_their_own_step(tmp_path, monkeypatch):
    monkeypatch.setattr("course.training.ddpm.DDPMRecipe", lambda: DDPMRecipe(
        batch_size=8, dataset_size=32, warmup_steps=1, unet=SMALL))
    out = tmp_path / "model.safetensors"
    assert main(["train", "ddpm-shapes", "--steps", "4", "--snapshot-every", "2",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-step2.safetensors",
                                                          "model.safetensors"]
    assert checkpoint_info(tmp_path / "model-step2.safetensors")["recipe"]["steps"] == 2
    assert checkpoint_info(out)["recipe"]["steps"] == 4


def test_bundled_model_loads_with_its_record():
    model = load_unet("ddpm-shapes")
    assert isinstance(model, TinyUNet) and not model.training
    info = checkpoint_info("ddpm-shapes")
    assert info["train_seconds"] > 0
    # the plain command ``python -m course train ddpm-shapes`` retrains exactly this recipe
    assert DDPMRecipe.from_dict(info["recipe"]) == DDPMRecipe()
    with pytest.raises(FileNotFoundError, match="bundled names"):
        load_unet("no-such-model")


# --------------------------------------------------------------------------------------------
# Lesson 02's checks: right answers pass, each known mistake is named, hints come in tiers
# --------------------------------------------------------------------------------------------


def _as_learner(fn):
    """``fn`` as if the learner had written it in the notebook (checks refuse package code)."""

    def learner(**kwargs):
        return fn(**kwargs)

    learner.__module__ = "__main__"
    return learner


def _right_resblock(block, x, t_emb):
    import torch.nn.functional as F

    h = block.conv1(F.silu(block.norm1(x)))
    h = h + block.time_proj(F.silu(t_emb))[:, :, None, None]
    return block.skip(x) + block.conv2(block.dropout(F.silu(block.norm2(h))))


def test_resblock_check_accepts_the_right_forward_on_every_case():
    from course.checks import lesson02

    report = lesson02.resblock_forward.run(_as_learner(_right_resblock), include_hidden=True)
    assert report.passed, str(report)
    assert len(report.cases) == 6


def test_resblock_check_wants_the_layers_not_the_block():
    from course.checks import lesson02

    report = lesson02.resblock_forward.run(
        _as_learner(lambda block, x, t_emb: block(x, t_emb)))
    assert report.cases[0].status == "error" and "call its layers" in report.cases[0].message


def test_lesson02_hints_end_with_the_solution_line():
    from course.checks import lesson02, next_hint, reset_hints

    for ex in lesson02.EXERCISES:
        assert len(ex.hints) == 3, ex.name
        reset_hints(ex.name)
        shown = [next_hint(ex.name) for _ in ex.hints]
        assert [h.number for h in shown] == [1, 2, 3] and shown[-1].is_solution
        reset_hints(ex.name)
    assert "return block.skip(x) + h" in lesson02.resblock_forward.hints[-1]
    assert "beta_tilde" in lesson02.ddpm_step.hints[-1]


def test_lesson02_probe_models_leave_the_global_rng_alone():
    from course.checks import lesson02

    before = torch.get_rng_state()
    for ex in lesson02.EXERCISES:
        for case in ex.cases:
            case.make_inputs()
    assert torch.equal(before, torch.get_rng_state())


def test_a_right_answer_failed_for_another_reason_is_not_blamed_on_a_mistake():
    from course.checks import lesson02

    def right_but_spoils_eps(x_t, eps, t, betas, noise=None):
        alpha_bar = torch.cumprod(1 - betas.double(), 0)
        prev = alpha_bar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        mean = (x_t - betas[t] / (1 - alpha_bar[t]).sqrt() * eps) / (1 - betas[t]).sqrt()
        out = mean if t == 0 else mean + (betas[t] * (1 - prev) / (1 - alpha_bar[t])).sqrt() * noise
        eps.zero_()  # the caller's tensor, changed in place
        return out.float()

    report = lesson02.ddpm_step.run(_as_learner(right_but_spoils_eps), include_hidden=True)
    assert all(c.status == "fail" and "in place" in c.message for c in report.cases)
    assert not any(c.mistake for c in report.cases), str(report)
