import numpy as np
import pytest
import torch

from course.data import load_photo, to_pil
from course.device import environment_report, fast_mode, pick_device, pick_dtype, seed_everything


def test_load_photo_is_a_square_image_in_model_range():
    photo = load_photo("grace_hopper", size=64)
    assert photo.shape == (3, 64, 64) and photo.dtype == torch.float32
    assert photo.min() >= -1 and photo.max() <= 1
    assert photo.std() > 0.2  # a real picture, not a constant
    assert torch.equal(photo, load_photo(size=64))


def test_load_photo_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown photo"):
        load_photo("mona_lisa")
    with pytest.raises(ValueError, match="size"):
        load_photo(size=3)


def test_to_pil_round_trip():
    photo = load_photo(size=32)
    image = to_pil(photo)
    assert image.size == (32, 32) and image.mode == "RGB"
    back = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1
    assert (back - photo).abs().max() < 1 / 127


def test_pick_device_and_dtype():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto").type in {"cpu", "mps"}
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            pick_device("cuda")
    assert pick_dtype(torch.device("cpu")) == torch.float32


def test_fast_mode_reads_the_environment(monkeypatch):
    monkeypatch.delenv("COURSE_FAST", raising=False)
    assert fast_mode(False) is False and fast_mode(True) is True
    monkeypatch.setenv("COURSE_FAST", "1")
    assert fast_mode(False) is True


def test_seed_everything_makes_runs_repeatable():
    generator = seed_everything(3)
    a = torch.randn(4), torch.randn(4, generator=generator)
    generator = seed_everything(3)
    b = torch.randn(4), torch.randn(4, generator=generator)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_environment_report_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = environment_report()
    assert report["torch"] == torch.__version__
    assert report["hub"].startswith("offline")
    assert report["device"] == str(pick_device("auto"))
