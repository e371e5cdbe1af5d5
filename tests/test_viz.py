"""Pictures: the pure render functions, and widgets that redraw when a control moves."""

import torch

from course.data import load_photo
from course.sampling import Trajectory
from course.viz import plots, widgets


def _png(figure) -> bytes:
    data = plots.figure_to_png(figure)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_noising_figure_depends_on_t_and_schedule_only():
    photo = load_photo(size=32)
    base = _png(plots.noising_figure(photo, 100))
    assert base == _png(plots.noising_figure(photo, 100))  # same arguments, same picture
    assert base != _png(plots.noising_figure(photo, 700))
    for label in plots.SCHEDULE_LABELS[1:]:
        assert base != _png(plots.noising_figure(photo, 100, schedule=label))


def test_other_figures_render_what_they_are_given():
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    grid = plots.image_grid(images, ncols=3, titles=list("abcdef"), suptitle="grid")
    _png(grid)
    shown = [ax for ax in grid.axes if ax.images]
    assert [ax.get_title() for ax in shown] == list("abcdef")
    assert grid._suptitle.get_text() == "grid"

    schedules = plots.plot_schedules(50)
    _png(schedules)
    for ax in schedules.axes:  # one curve per schedule, over every timestep (the SNR side adds 0)
        curves = [line for line in ax.lines if len(line.get_xdata()) == 50]
        assert [line.get_label() for line in curves] == list(plots.SCHEDULE_LABELS)

    noisy = plots.noise_grid(load_photo(size=16), timesteps=(0, 49), T=50)
    _png(noisy)
    assert sum(bool(ax.images) for ax in noisy.axes) == 2 * len(plots.SCHEDULE_LABELS)

    embedding = plots.plot_embedding(torch.rand(10, 8) * 2 - 1)
    _png(embedding)
    assert embedding.axes[0].images[0].get_array().shape == (8, 10)  # one column per timestep

    losses = plots.plot_losses({"run": [1.0 / (i + 1) for i in range(60)], "short": [0.5, 0.4]})
    _png(losses)
    labels = [line.get_label() for line in losses.axes[0].lines]
    assert any("run" in label for label in labels) and any("short" in label for label in labels)

    rows = [{"scheduler": "DDIM", "steps": s, "seconds_per_image": s / 100, "clean": 0.9}
            for s in (10, 20)]
    timing = plots.quality_vs_time(rows)
    _png(timing)
    texts = {t.get_text() for t in timing.axes[0].texts}
    assert {"10", "20"} <= texts, texts


def _trajectory():
    x = torch.rand(4, 2, 3, 8, 8) * 2 - 1
    return Trajectory([999, 500, 0, -1], x, x.flip(0))


def test_trajectory_figure_shows_the_chosen_snapshot():
    tr = _trajectory()
    first = _png(plots.trajectory_figure(tr.timesteps, tr.x_t, tr.x0_hat, 0))
    assert first != _png(plots.trajectory_figure(tr.timesteps, tr.x_t, tr.x0_hat, 3))


def test_widgets_redraw_when_a_control_moves():
    noising = widgets.forward_noising_widget(load_photo(size=16), T=100, t=10)
    trajectory = widgets.trajectory_widget(_trajectory())
    calls = []

    def sample(eta, steps):
        calls.append((eta, steps))
        return torch.full((2, 3, 8, 8), eta * 2 - 1), f"eta={eta}"

    ddim = widgets.ddim_widget(sample, prefetch=False)
    for box, css, value in [(noising, "course-forward-noising", 90),
                            (trajectory, "course-trajectory", 0), (ddim, "course-ddim", 1.0)]:
        assert css in box._dom_classes
        slider, picture = box.children[0].children[0], box.children[1]
        before = picture.value
        assert before  # drawn at once, so headless runs show a picture
        slider.value = value
        assert picture.value != before
    assert calls == [(0.0, 20), (1.0, 20)]


def test_ddim_neighbours_are_one_notch_first_then_the_eta_row_then_two_notches_of_steps():
    assert widgets.ddim_neighbours(0.3, 5) == [
        (0.2, 5), (0.4, 5), (0.3, 10),  # one notch; 0 steps is off the slider
        (0.1, 5), (0.5, 5), (0.0, 5), (0.6, 5), (0.7, 5), (0.8, 5), (0.9, 5), (1.0, 5),
        (0.3, 15)]
    views = widgets.ddim_neighbours(1.0, 100)
    assert views[:2] == [(0.9, 100), (1.0, 95)] and views[-1] == (1.0, 90)
    assert len(views) == len(set(views)) == 10 + 2


def test_ddim_widget_samples_the_next_views_in_the_background():
    import threading

    calls = []

    def sample(eta, steps):
        calls.append((eta, steps, threading.current_thread().name))
        return torch.full((2, 3, 8, 8), eta * 2 - 1), f"eta={eta}, steps={steps}"

    ddim = widgets.ddim_widget(sample, eta=0.0, steps=20)
    assert ddim.samples.wait_idle(timeout=30)
    assert calls[0] == (0.0, 20, "MainThread")
    assert sorted(calls[1:]) == sorted((*view, "course-prefetch")
                                       for view in widgets.ddim_neighbours(0.0, 20))
    eta, picture = ddim.children[0].children[0], ddim.children[1]
    before = picture.value
    eta.value = 1.0000000000000002  # as a browser's slider may send it: still the 1.0 view
    assert picture.value != before
    assert ddim.samples.wait_idle(timeout=30)
    assert [call for call in calls if call[:2] == (1.0, 20)] == [(1.0, 20, "course-prefetch")]
    assert (0.9, 20, "course-prefetch") in calls  # already there; (1.0, 15) is new
    assert (1.0, 15, "course-prefetch") in calls
    assert all(name == "course-prefetch" for *_, name in calls[1:])


def test_noising_widget_offers_each_preset_schedule():
    noising = widgets.forward_noising_widget(load_photo(size=16), T=100, t=90)
    choice, picture = noising.children[0].children[1], noising.children[1]
    assert list(choice.options) == list(plots.SCHEDULE_LABELS)
    assert choice.value == "linear (DDPM)" and "Stable Diffusion" in choice.options[1]
    before = picture.value
    choice.value = plots.SCHEDULE_LABELS[1]
    assert picture.value != before


def test_picture_widget_redraws_new_views_and_shows_seen_ones_from_its_cache():
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from course.viz.widgets import picture_widget

    slider = widgets.IntSlider(value=0, min=0, max=10)
    drawn = []

    def draw():
        drawn.append(slider.value)
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.set_title(str(slider.value))
        return fig

    box = picture_widget("course-test", [slider], draw, cache_size=2)
    picture = box.children[1]
    first = picture.value
    slider.value = 5
    assert picture.value != first and drawn == [0, 5]
    slider.value = 0  # seen: shown again without drawing
    assert picture.value == first and drawn == [0, 5]
    slider.value = 7  # a third view pushes out the least recently shown (5)
    slider.value = 5
    assert drawn == [0, 5, 7, 5]
    plt.close("all")
