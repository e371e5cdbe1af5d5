"""Pictures of flow matching on the 2-D toy (lesson 08): pure render functions and two widgets.

- ``path_figure``: the probability path at one sigma, samples of x_sigma under the exact
  marginal velocity field, and for a few pairs the conditional velocity they were trained on.
- ``steps_figure``: Euler trajectories with a given number of steps next to the exact ODE
  solution, with the endpoint error of every offered step count.

Arrows show -v, the direction a sample moves while sigma falls towards the data: in diffusers'
convention v = d x / d sigma points towards the noise. The widgets (``flow_path_widget``,
``flow_steps_widget``) compute what their sliders can ask for when they are built, so moving a
slider only draws.
"""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from ..diffusion import interpolate, velocity_target
from ..flows.toy2d import GaussianMixture2D, marginal_velocity
from ..flows.toy_sampling import Velocity, euler_trajectory, ode_trajectory
from .widgets import picture_widget

#: The square every toy picture shows, so that pictures at different slider values line up.
LIMITS = (-3.2, 3.2)

#: Step counts the step slider offers: each doubling should halve Euler's endpoint error.
STEP_COUNTS = (1, 2, 4, 8, 16, 32, 64)


def _square(ax, title: str) -> None:
    ax.set(xlim=LIMITS, ylim=LIMITS, aspect="equal", title=title)
    ax.set_xticks([])
    ax.set_yticks([])


def path_figure(x0: torch.Tensor, noise: torch.Tensor, sigma: float,
                mixture: GaussianMixture2D, pairs: int = 3, grid: int = 17) -> Figure:
    """Samples of x_sigma = (1 - sigma) x0 + sigma eps, with the field -v(x, sigma) as arrows.

    x0 [N, 2] are data points and noise [N, 2] their partners. The arrows are the exact marginal
    velocity of ``mixture`` on a ``grid`` x ``grid`` lattice. For the first ``pairs`` points the
    figure also draws the straight conditional path from the noise to the data point and, at
    x_sigma, both arrows: the conditional velocity eps - x0 of that pair (what the loss asks for)
    and the marginal one (what the network can learn, the average over all pairs through x).
    """
    x_sigma = interpolate(x0, noise, sigma)
    axis = torch.linspace(*LIMITS, grid)
    lattice = torch.cartesian_prod(axis, axis)  # [G * G, 2]
    field = -marginal_velocity(lattice, sigma, mixture)  # the direction of generation

    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.quiver(lattice[:, 0], lattice[:, 1], field[:, 0], field[:, 1], color="0.55",
              angles="xy", scale_units="xy", scale=6, width=0.004)
    ax.scatter(x_sigma[:, 0], x_sigma[:, 1], s=3, color="tab:blue", alpha=0.5,
               label=r"samples of $x_\sigma$")
    for i in range(min(pairs, len(x0))):
        ax.plot([noise[i, 0], x0[i, 0]], [noise[i, 1], x0[i, 1]], ":", color="tab:red", lw=1)
        here = x_sigma[i : i + 1]
        conditional = -velocity_target(x0[i : i + 1], noise[i : i + 1])[0]
        marginal = -marginal_velocity(here, sigma, mixture)[0]
        for arrow, colour, label in ((conditional, "tab:red", "conditional $-(\\epsilon - x_0)$"),
                                     (marginal, "black", "marginal $-v(x, \\sigma)$")):
            ax.quiver(here[0, 0], here[0, 1], arrow[0], arrow[1], color=colour, angles="xy",
                      scale_units="xy", scale=6, width=0.008, label=label if i == 0 else None)
    _square(ax, f"probability path at $\\sigma$ = {sigma:.2f}  (1 = noise, 0 = data)")
    ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    return fig


def endpoint_error(trajectory: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean distance between the final states [N, 2] of a trajectory and of the reference."""
    return float((trajectory[-1] - reference[-1]).norm(dim=-1).mean())


def steps_figure(trajectories: dict[int, torch.Tensor], reference: torch.Tensor, steps: int,
                 n_paths: int = 24) -> Figure:
    """Euler with ``steps`` steps against the exact ODE solution, and the error of every count.

    trajectories: step count -> Euler trajectory [count + 1, N, 2], all from the start points of
    ``reference`` [K + 1, N, 2] (a fine Runge-Kutta solution). Left: the first ``n_paths`` paths of
    both, and every endpoint. Right: the mean endpoint error against the step count.
    """
    chosen = trajectories[steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.6, 4.2),
                                      gridspec_kw={"width_ratios": [1.1, 1]})
    for i in range(min(n_paths, reference.shape[1])):
        left.plot(reference[:, i, 0], reference[:, i, 1], color="0.6", lw=1,
                  label="exact ODE" if i == 0 else None)
        left.plot(chosen[:, i, 0], chosen[:, i, 1], "-o", color="tab:orange", lw=1,
                  markersize=2.5, label=f"Euler, {steps} steps" if i == 0 else None)
    left.scatter(reference[-1, :, 0], reference[-1, :, 1], s=3, color="0.4", alpha=0.6)
    left.scatter(chosen[-1, :, 0], chosen[-1, :, 1], s=3, color="tab:orange", alpha=0.6)
    error = endpoint_error(chosen, reference)
    _square(left, f"{steps} Euler steps: endpoint error {error:.3f}")
    left.legend(loc="lower left", fontsize=7, framealpha=0.8)

    counts = sorted(trajectories)
    errors = [endpoint_error(trajectories[n], reference) for n in counts]
    right.loglog(counts, errors, "o-", color="tab:orange")
    right.loglog([steps], [error], "o", color="black", markersize=9, fillstyle="none")
    right.set_xticks(counts, [str(n) for n in counts])
    right.minorticks_off()
    right.set(xlabel="Euler steps", ylabel="mean endpoint error",
              title="error against steps (Euler: about 1 / steps)")
    fig.tight_layout()
    return fig


def flow_path_widget(mixture: GaussianMixture2D, x0: torch.Tensor, noise: torch.Tensor,
                     sigma: float = 0.5, pairs: int = 3) -> widgets.VBox:
    """A sigma slider over ``path_figure`` of data points x0 [N, 2] and their noise [N, 2]."""
    slider = widgets.FloatSlider(value=sigma, min=0.0, max=1.0, step=0.05, description="sigma",
                                 continuous_update=False, readout_format=".2f",
                                 layout=widgets.Layout(width="420px"))
    return picture_widget("course-flow-path", [slider],
                          lambda: path_figure(x0, noise, slider.value, mixture, pairs))


def euler_study(velocity: Velocity, x1: torch.Tensor, step_counts=STEP_COUNTS,
                reference_steps: int = 200) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Euler trajectories of ``velocity`` from x1 [N, 2] for each step count, and the reference
    Runge-Kutta solution [reference_steps + 1, N, 2]: everything ``steps_figure`` draws."""
    trajectories = {n: euler_trajectory(velocity, x1, n) for n in step_counts}
    return trajectories, ode_trajectory(velocity, x1, reference_steps)


def flow_steps_widget(velocity: Velocity, x1: torch.Tensor, step_counts=STEP_COUNTS,
                      steps: int = 4, reference_steps: int = 200) -> widgets.VBox:
    """A step-count slider over ``steps_figure``; every trajectory is computed once, here.

    ``velocity``: ``course.flows.velocity_of(model)`` or the exact field of the mixture.
    """
    trajectories, reference = euler_study(velocity, x1, step_counts, reference_steps)
    slider = widgets.SelectionSlider(options=list(step_counts), value=steps,
                                     description="Euler steps", continuous_update=True,
                                     layout=widgets.Layout(width="420px"))
    return picture_widget("course-flow-steps", [slider],
                          lambda: steps_figure(trajectories, reference, slider.value))
