"""Thin ipywidgets wrappers: sliders in, a picture from ``plots`` out.

Each widget draws its default view when it is built, so a notebook executed headless (papermill,
nbval, the grader) still shows a meaningful picture. Every widget is a VBox with a CSS class of
its own and a ``course-picture`` image, which the browser tests look for.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
from matplotlib.figure import Figure

from . import plots
from .prefetch import Prefetcher


def picture_widget(css_class: str, controls: list, draw: Callable[[], Figure],
                   cache_size: int = 32) -> widgets.VBox:
    """Controls above a PNG picture that ``draw()`` re-renders whenever a control changes.

    The last ``cache_size`` pictures are kept by the controls' values, so going back to a view
    seen before (the learner's usual back-and-forth) shows it at once instead of sampling again.
    ``draw`` must depend on the controls alone.
    """
    picture = widgets.Image(format="png")
    picture.add_class("course-picture")
    # the same least-recently-used cache the slow widgets prefetch into; nothing is prefetched
    # here, so it never starts a thread
    pictures = Prefetcher(lambda *_values: plots.figure_to_png(draw()), cache_size)

    def redraw(_change=None):
        picture.value = pictures.get(tuple(control.value for control in controls))

    for control in controls:
        control.observe(redraw, names="value")
    redraw()
    # flex-start: the picture keeps the size it was drawn at, as an inline figure does; the
    # default (stretch) blows it up to the notebook's width, taller than a laptop's screen
    box = widgets.VBox([widgets.HBox(controls), picture],
                       layout=widgets.Layout(align_items="flex-start"))
    box.add_class(css_class)
    return box


def forward_noising_widget(image, T: int = 1000, seed: int = 0, t: int = 250,
                           schedule: str = plots.DEFAULT_SCHEDULE) -> widgets.VBox:
    """Timestep slider and schedule choice over ``plots.noising_figure`` of ``image`` [3, H, W].

    The choices are ``plots.SCHEDULE_LABELS``: each schedule as its best-known model uses it.
    """
    t_slider = widgets.IntSlider(value=t, min=0, max=T - 1, step=1, description="timestep t",
                                 continuous_update=False, layout=widgets.Layout(width="420px"))
    schedule_choice = widgets.Dropdown(options=list(plots.SCHEDULE_LABELS), value=schedule,
                                       description="schedule",
                                       layout=widgets.Layout(width="360px"))
    return picture_widget(
        "course-forward-noising", [t_slider, schedule_choice],
        lambda: plots.noising_figure(image, t_slider.value, schedule_choice.value, T=T, seed=seed))


def trajectory_widget(trajectory, n_show: int = 6) -> widgets.VBox:
    """A step slider over a saved sampling run: x_t and the predicted x_0 at each snapshot.

    ``trajectory``: a ``course.sampling.Trajectory``.
    """
    last = len(trajectory.timesteps) - 1
    step = widgets.IntSlider(value=last // 2, min=0, max=last, description="step",
                             continuous_update=True, layout=widgets.Layout(width="420px"))
    return picture_widget(
        "course-trajectory", [step],
        lambda: plots.trajectory_figure(trajectory.timesteps, trajectory.x_t, trajectory.x0_hat,
                                        step.value, n_show))


def ddim_widget(sample_fn, eta: float = 0.0, steps: int = 20,
                prefetch: bool = True) -> widgets.VBox:
    """Sliders for DDIM's eta and step count over ``sample_fn(eta, steps) -> (images, title)``.

    The sampling itself lives in the lesson (it needs the model); the widget only re-runs it.
    Every new view is a full sampling run, so with ``prefetch`` the widget samples the views one
    move away (``ddim_neighbours``) in the background while the learner looks at this one; the
    ``Prefetcher`` it uses is the box's ``samples`` attribute.
    """
    eta_slider = widgets.FloatSlider(value=eta, min=0.0, max=1.0, step=0.1, description="eta",
                                     continuous_update=False, readout_format=".1f")
    steps_slider = widgets.IntSlider(value=steps, min=5, max=100, step=5, description="steps",
                                     continuous_update=False)
    samples = Prefetcher(sample_fn)

    def draw() -> Figure:
        # rounded: the browser's slider may send 0.30000000000000004 for 0.3
        view = (round(eta_slider.value, 1), steps_slider.value)
        images, title = samples.get(view)
        if prefetch:
            samples.prefetch(ddim_neighbours(*view, steps_range=(steps_slider.min,
                                                                 steps_slider.max)))
        return plots.image_grid(images, suptitle=title)

    box = picture_widget("course-ddim", [eta_slider, steps_slider], draw)
    box.samples = samples
    return box


def ddim_neighbours(eta: float, steps: int, steps_range: tuple[int, int] = (5, 100),
                    eta_step: float = 0.1, steps_step: int = 5) -> list[tuple[float, int]]:
    """The views a learner most likely asks for after ``(eta, steps)``, likeliest first.

    One notch of either slider first; then every other eta at these steps (eta is the slider the
    lesson asks to move, and a drag often goes end to end); then two notches of steps. At most
    14 views: about 14 sampling runs of ``steps`` steps each.
    """
    notches = round(1 / eta_step)
    here = round(eta / eta_step)  # eta as a whole number of notches: no float ties
    low, high = steps_range

    def at_eta(notch: int) -> tuple[float, int]:
        return round(notch * eta_step, 1), steps

    def near_steps(notches_away: int) -> list[tuple[float, int]]:
        return [(eta, s) for s in (steps - notches_away * steps_step,
                                   steps + notches_away * steps_step) if low <= s <= high]

    one_notch = [at_eta(n) for n in (here - 1, here + 1) if 0 <= n <= notches] + near_steps(1)
    eta_row = [at_eta(n) for n in sorted(range(notches + 1), key=lambda n: abs(n - here))
               if n != here]
    return list(dict.fromkeys(one_notch + eta_row + near_steps(2)))
