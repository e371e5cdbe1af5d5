"""Lesson 08's pictures: each depends on its slider value, and the widgets redraw when it moves."""

import torch

from course.flows import eight_gaussians, marginal_velocity
from course.viz import flow
from course.viz.plots import figure_to_png

DATA = eight_gaussians()
X0 = DATA.sample(300, torch.Generator().manual_seed(0))
NOISE = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))


def _exact(x, sigma):
    return marginal_velocity(x, sigma, DATA)


def _png(figure) -> bytes:
    data = figure_to_png(figure)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_path_figure_depends_on_sigma_only():
    base = _png(flow.path_figure(X0, NOISE, 0.5, DATA))
    assert base == _png(flow.path_figure(X0, NOISE, 0.5, DATA))
    assert base != _png(flow.path_figure(X0, NOISE, 0.2, DATA))
    figure = flow.path_figure(X0, NOISE, 0.0, DATA, pairs=2)
    # at sigma = 0 the samples are the data themselves
    scatter = figure.axes[0].collections[1]
    torch.testing.assert_close(torch.as_tensor(scatter.get_offsets().data).float(), X0)
    _png(figure)


def test_steps_figure_depends_on_the_step_count_and_prints_the_endpoint_error():
    trajectories, reference = flow.euler_study(_exact, NOISE[:50], (1, 2, 4), reference_steps=50)
    assert sorted(trajectories) == [1, 2, 4] and reference.shape == (51, 50, 2)
    base = _png(flow.steps_figure(trajectories, reference, 2))
    assert base == _png(flow.steps_figure(trajectories, reference, 2))
    assert base != _png(flow.steps_figure(trajectories, reference, 4))
    figure = flow.steps_figure(trajectories, reference, 4)
    error = flow.endpoint_error(trajectories[4], reference)
    assert f"endpoint error {error:.3f}" in figure.axes[0].get_title()
    assert flow.endpoint_error(reference, reference) == 0
    errors = figure.axes[1].lines[0].get_ydata()  # one error per offered count, falling
    assert len(errors) == 3 and errors[0] > errors[1] > errors[2]
    _png(figure)


def test_widgets_redraw_when_their_slider_moves_without_recomputing_trajectories():
    path = flow.flow_path_widget(DATA, X0, NOISE, sigma=0.5)
    calls = []

    def counted(x, sigma):
        calls.append(sigma)
        return _exact(x, sigma)

    steps = flow.flow_steps_widget(counted, NOISE[:40], step_counts=(1, 2, 4), steps=2,
                                   reference_steps=20)
    built = len(calls)
    assert built == 1 + 2 + 4 + 4 * 20  # the Euler steps and RK4's four calls per step
    for box, css, value in [(path, "course-flow-path", 0.9), (steps, "course-flow-steps", 4)]:
        assert css in box._dom_classes
        slider, picture = box.children[0].children[0], box.children[1]
        before = picture.value
        assert before  # drawn at once, so headless runs show a picture
        slider.value = value
        assert picture.value != before
    assert len(calls) == built  # moving the step slider only draws
