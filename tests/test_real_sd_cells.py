"""The lessons' real Stable Diffusion cells run their code, not only their skip.

Those cells need a CUDA GPU and the Hugging Face hub, which the suite never has. Here a stand-in
(SD 1.5's classes and block layout, small widths, random weights, saved in the hub's folder
layout: ``course.tinysd.standin``) takes the real model's place through ``COURSE_SD_STANDIN``,
and each lesson runs whole in FAST mode: the real-SD cell must run to its end on it. Without the
variable the same cell must skip, naming what is missing.
"""

import pytest

from course.dev.notebooks import execute_notebook
from course.models.pipelines import STANDIN_ENV, real_pipeline
from course.tinysd.standin import build_standin, save_standin
from tests.helpers import SOLUTIONS, error_outputs

#: lesson -> what its real-SD cell prints once it has run to its end
REAL_SD_CELLS = {
    "04": "SD 1.5: ",
    "05": "SD 1.5: one start noise at w = 1, 3, 7.5, 12",
    "06": "generate(sd, ...) vs sd(...)",
}


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return save_standin(tmp_path_factory.mktemp("standin") / "sd15-standin")


def _real_sd_cell_text(notebook) -> str:
    """What the cell that calls ``real_pipeline`` printed."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and "real_pipeline(" in c.source]
    assert len(cells) == 1, "one real-SD cell per lesson"
    return "".join(o.get("text", "") for o in cells[0].outputs
                   if o.get("output_type") == "stream")


@pytest.mark.notebook
@pytest.mark.parametrize("lesson", sorted(REAL_SD_CELLS))
def test_the_real_sd_cell_runs_on_a_stand_in(lesson, standin):
    path = next(p for p in SOLUTIONS if p.name.startswith(lesson))
    notebook, _ = execute_notebook(path, parameters={"FAST": True}, timeout=600,
                                   env={STANDIN_ENV: str(standin)})
    assert error_outputs(notebook) == []
    text = _real_sd_cell_text(notebook)
    assert "skipped" not in text
    assert REAL_SD_CELLS[lesson] in text


def test_without_a_gpu_the_real_pipeline_says_why(monkeypatch):
    monkeypatch.delenv(STANDIN_ENV, raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    pipe, why = real_pipeline("sd-1.5")
    assert pipe is None and "CUDA GPU" in why


def test_the_stand_in_has_sd_15s_layout_and_loads_like_a_hub_folder(standin, monkeypatch):
    monkeypatch.setenv(STANDIN_ENV, str(standin))
    pipe, why = real_pipeline("sd-1.5")
    assert why is None
    assert not any(standin.rglob("*.bin")) and any(standin.rglob("*.safetensors"))
    assert (standin / "unet" / "config.json").is_file()  # the hub's layout, one folder each
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.scaling_factor == 0.18215
    assert [type(b).__name__ for b in pipe.unet.down_blocks] == [
        "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    assert pipe.text_encoder.config.max_position_embeddings == 77
    # same seed, same random weights
    first, second = build_standin(seed=3), build_standin(seed=3)
    assert all((a == b).all() for a, b in zip(first.unet.parameters(), second.unet.parameters()))
