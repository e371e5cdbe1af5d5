"""Thin ipywidgets wrappers: sliders in, a picture from ``plots`` out.

Each widget draws its default view when it is built, so a notebook executed headless (papermill,
nbval, the grader) still shows a meaningful picture.
"""

from __future__ import annotations

import ipywidgets as widgets

from ..diffusion import SCHEDULES
from . import plots


def forward_noising_widget(image, T: int = 1000, seed: int = 0, t: int = 250,
                           schedule: str = "linear") -> widgets.VBox:
    """Timestep slider and schedule choice over ``plots.noising_figure`` of ``image`` [3, H, W]."""
    t_slider = widgets.IntSlider(value=t, min=0, max=T - 1, step=1, description="timestep t",
                                 continuous_update=False,
                                 layout=widgets.Layout(width="420px"))
    schedule_choice = widgets.Dropdown(options=list(SCHEDULES), value=schedule,
                                       description="schedule")
    picture = widgets.Image(format="png")
    picture.add_class("course-picture")

    def redraw(_change=None):
        figure = plots.noising_figure(image, t_slider.value, schedule_choice.value, T=T, seed=seed)
        picture.value = plots.figure_to_png(figure)

    t_slider.observe(redraw, names="value")
    schedule_choice.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([t_slider, schedule_choice]), picture])
    box.add_class("course-forward-noising")
    return box
