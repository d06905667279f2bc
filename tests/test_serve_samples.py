"""The page's sample scenes (fcnseg.serve.samples): CamVid training frames from this machine's
copy, which both shipped models segment well; generated scenes, named as such, without it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import require_real_dataset
from PIL import Image

from fcnseg.serve import samples

WEIGHTS = ["weights/camvid_fcn4s_lite0.safetensors", "weights/camvid_fcn4s_lite0_fast.safetensors"]
#: Both models score 0.80-0.85 mean IU on each frame (whole-image forward); below this a sample
#: would show the model failing.
MIN_MEAN_IU = 0.75


def _mean_iu(prediction: np.ndarray, label: np.ndarray, classes: int = 11) -> float:
    scored = label < classes
    ious = []
    for c in range(classes):
        truth, guess = (label == c) & scored, (prediction == c) & scored
        if truth.any():
            ious.append((truth & guess).sum() / (truth | guess).sum())
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def frames():
    require_real_dataset("camvid", "train.txt")
    return [samples.camvid_frame(i) for i in range(samples.SAMPLE_COUNT)]


@pytest.mark.slow
@pytest.mark.parametrize("weights", WEIGHTS)
def test_both_shipped_models_segment_every_sample_well(frames, weights):
    import torch

    from fcnseg.engine.session import InferenceSession

    assert all(path is not None and path.parent.name == "train" for path in frames)
    session = InferenceSession.load(weights=weights, mode="whole", device="cpu")
    for index, path in enumerate(frames):
        image = torch.from_numpy(samples.sample_array(index).copy()).permute(2, 0, 1)
        label = np.asarray(Image.open(samples.camvid_frame(index, "trainannot")))
        prediction = session.labels([image]).numpy()[0]
        assert _mean_iu(prediction, label) >= MIN_MEAN_IU, (weights, path.name)


def test_samples_are_the_camvid_frames_as_png(frames):
    samples.sample_png.cache_clear()
    png = Image.open(io.BytesIO(samples.sample_png(0)))
    assert png.format == "PNG" and png.size == (480, 360)
    assert (
        np.asarray(png.convert("RGB")) == np.asarray(Image.open(frames[0]).convert("RGB"))
    ).all()
    assert samples.sample_name(0) == f"CamVid {samples.SAMPLE_FRAMES[0]}"


def test_without_camvid_the_samples_are_generated_and_say_so(tmp_path, monkeypatch):
    monkeypatch.setenv("FCNSEG_DATA", str(tmp_path))
    assert samples.camvid_frame(1) is None
    assert samples.sample_name(1) == "Generated scene 2 (not CamVid)"
    image = samples.sample_array(1)
    assert image.shape == (*samples.SAMPLE_SIZE, 3) and image.dtype == np.uint8
    with pytest.raises(IndexError, match="there are 4"):
        samples.sample_array(samples.SAMPLE_COUNT)
