"""Pure render functions: arguments in, a matplotlib Figure (or PNG bytes) out.

Nothing here keeps state or talks to widgets, so every picture a lesson shows can be unit-tested
and rebuilt headless. Images are tensors in [-1, 1], shaped [3, H, W] or [B, 3, H, W].
"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from ..diffusion import (
    SCHEDULE_PRESETS,
    alpha_bars,
    forward_diffusion,
    preset_schedule,
)


def to_display(image: torch.Tensor):
    """[3, H, W] in [-1, 1] -> [H, W, 3] numpy array in [0, 1] for ``imshow``."""
    return ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def figure_to_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a figure to PNG bytes and close it (widgets show bytes, not figures)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


#: Schedule labels the lesson-01 pictures offer (``course.diffusion.SCHEDULE_PRESETS``).
SCHEDULE_LABELS = tuple(SCHEDULE_PRESETS)
DEFAULT_SCHEDULE = SCHEDULE_LABELS[0]


def plot_schedules(T: int = 1000, labels=SCHEDULE_LABELS) -> Figure:
    """alpha_bar_t and log10 SNR(t) of each preset schedule, side by side."""
    fig, (ax_ab, ax_snr) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = torch.arange(T)
    for label in labels:
        alpha_bar = alpha_bars(preset_schedule(label, T).double())
        ax_ab.plot(steps, alpha_bar, label=label)
        ax_snr.plot(steps, torch.log10(alpha_bar / (1 - alpha_bar)), label=label)
    ax_ab.set(title=r"signal kept: $\bar\alpha_t$", xlabel="timestep t", ylim=(0, 1.02))
    ax_snr.set(title=r"$\log_{10}$ SNR$(t) = \log_{10} \bar\alpha_t / (1-\bar\alpha_t)$",
               xlabel="timestep t")
    ax_snr.axhline(0, color="grey", lw=0.8, ls=":")
    ax_ab.legend()
    fig.tight_layout()
    return fig


def noising_figure(
    image: torch.Tensor, t: int, schedule: str = DEFAULT_SCHEDULE, T: int = 1000, seed: int = 0
) -> Figure:
    """x_t of one image beside the histogram of its pixel values.

    ``schedule`` is a label of ``SCHEDULE_LABELS``. The noise is drawn from ``seed`` alone, so
    moving t rescales one fixed noise pattern instead of flickering between patterns: the
    picture changes only because t changed.
    """
    betas = preset_schedule(schedule, T)
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    x_t, _ = forward_diffusion(image, t, betas, noise=noise)
    alpha_bar_t = float(alpha_bars(betas.double())[t])

    fig, (ax_img, ax_hist) = plt.subplots(1, 2, figsize=(7.5, 3.2),
                                          gridspec_kw={"width_ratios": [1, 1.3]})
    ax_img.imshow(to_display(x_t))
    ax_img.set_title(f"$x_{{{t}}}$, {schedule}", fontsize=9)
    ax_img.axis("off")

    grid = torch.linspace(-4, 4, 200)
    ax_hist.hist(x_t.flatten().numpy(), bins=60, range=(-4, 4), density=True,
                 color="tab:blue", alpha=0.7, label="pixels of $x_t$")
    ax_hist.plot(grid, torch.exp(-grid**2 / 2) / (2 * torch.pi) ** 0.5, color="black",
                 lw=1.2, label="N(0, 1)")
    ax_hist.set(xlim=(-4, 4), ylim=(0, 1.0), xlabel="pixel value",
                title=rf"$\bar\alpha_t$={alpha_bar_t:.3f}   std={x_t.std():.2f}")
    ax_hist.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def noise_grid(
    image: torch.Tensor,
    timesteps=(0, 50, 100, 250, 500, 750, 999),
    schedules=SCHEDULE_LABELS,
    T: int = 1000,
    seed: int = 0,
    size: float = 1.6,
) -> Figure:
    """One row per preset schedule, one column per timestep: the same photo and noise, noised."""
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(len(schedules), len(timesteps),
                             figsize=(size * len(timesteps), size * len(schedules) + 0.3),
                             squeeze=False)
    for row, label in enumerate(schedules):
        betas = preset_schedule(label, T)
        for col, t in enumerate(timesteps):
            x_t, _ = forward_diffusion(image, t, betas, noise=noise)
            ax = axes[row, col]
            ax.imshow(to_display(x_t))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t = {t}", fontsize=9)
            if col == 0:
                ax.set_ylabel(label.replace(" (", "\n("), fontsize=8)
    fig.tight_layout()
    return fig


def image_grid(images: torch.Tensor, ncols: int = 8, titles=None, size: float = 1.1,
               suptitle: str | None = None) -> Figure:
    """Images [N, 3, H, W] in [-1, 1] on a grid, optional small titles under each."""
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_display(images[i]), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def plot_embedding(embedding: torch.Tensor) -> Figure:
    """A timestep embedding [T, dim] as a heat map: one row per timestep, one column per unit."""
    fig, ax = plt.subplots(figsize=(7, 3))
    image = ax.imshow(embedding.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1,
                      interpolation="nearest")
    ax.set(xlabel="timestep t", ylabel="embedding dimension",
           title="cosines (top half) and sines (bottom half), fast to slow frequencies")
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def plot_losses(curves: dict, window: int = 25) -> Figure:
    """Training losses, raw and smoothed by a moving average of ``window`` steps."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for name, losses in curves.items():
        losses = torch.as_tensor(losses, dtype=torch.float32)
        line, = ax.plot(losses, alpha=0.25)
        if len(losses) >= window:
            smooth = losses.unfold(0, window, 1).mean(1)
            ax.plot(torch.arange(window - 1, len(losses)), smooth, color=line.get_color(),
                    label=name)
        else:
            line.set_label(name)
            line.set_alpha(1)
    ax.set(xlabel="training step", ylabel="MSE(eps, eps_theta)", yscale="log")
    ax.legend()
    fig.tight_layout()
    return fig


def trajectory_figure(timesteps, x_t: torch.Tensor, x0_hat: torch.Tensor, index: int,
                      n_show: int = 6) -> Figure:
    """One snapshot of a sampling run: x_t (top row) and the model's guess of x_0 (bottom).

    x_t, x0_hat: [K, N, 3, H, W] snapshots; ``index`` picks one of the K.
    """
    n_show = min(n_show, x_t.shape[1])
    fig, axes = plt.subplots(2, n_show, figsize=(1.3 * n_show, 3.0), squeeze=False)
    t = timesteps[index]
    for j in range(n_show):
        for row, images in enumerate((x_t, x0_hat)):
            ax = axes[row, j]
            ax.imshow(to_display(images[index, j]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        if j == 0:
            axes[0, 0].set_ylabel("$x_t$", fontsize=10)
            axes[1, 0].set_ylabel(r"$\hat x_0$", fontsize=10)
    label = "final image" if t < 0 else f"t = {t}"
    fig.suptitle(f"{label}   (step {index} of {len(timesteps) - 1})", fontsize=10)
    fig.tight_layout()
    return fig


def quality_vs_time(rows: list[dict],
                    title: str = "quality against time; labels are step counts") -> Figure:
    """Scheduler comparison: quality (share of clean samples) against milliseconds per image.

    rows: dicts with keys scheduler, steps, clean and ms_per_image (or seconds_per_image).
    """

    def ms(row: dict) -> float:
        return row["ms_per_image"] if "ms_per_image" in row else 1000 * row["seconds_per_image"]

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name in dict.fromkeys(r["scheduler"] for r in rows):
        mine = [r for r in rows if r["scheduler"] == name]
        ax.plot([ms(r) for r in mine], [100 * r["clean"] for r in mine], marker="o", label=name)
        for r in mine:
            ax.annotate(str(r["steps"]), (ms(r), 100 * r["clean"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xscale="log", xlabel="milliseconds per image (log scale)", ylabel="clean samples (%)",
           title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
