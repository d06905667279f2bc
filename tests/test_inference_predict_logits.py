"""predict_logits / predict_probs: whole, sliding and multi-scale+flip modes on stand-in models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.inference import predict_logits, predict_probs
from fcnseg.inference.sliding import blend_window, sliding_window_logits, tile_starts
from fcnseg.inference.tta import multiscale_flip_probs

NUM_CLASSES = 4


class PointwiseNet(nn.Module):
    """1x1 convolutions only: each output pixel depends on its input pixel alone, so any tiling
    and any flip must reproduce whole-image logits exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class CoarseNet(nn.Module):
    """A small FCN: stride-4 features with context, bilinear upsampling to the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, NUM_CLASSES, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(self.features(x), size=x.shape[-2:], mode="bilinear")


class TwoHeadNet(nn.Module):
    """SIFT Flow style: a dict of heads with different class counts."""

    def __init__(self) -> None:
        super().__init__()
        self.semantic = nn.Conv2d(3, NUM_CLASSES, 1)
        self.geometric = nn.Conv2d(3, 2, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"semantic": self.semantic(x), "geometric": self.geometric(x)}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_tile_starts_cover_and_end_flush() -> None:
    assert tile_starts(100, 40, 30) == [0, 30, 60]
    assert tile_starts(90, 40, 25) == [0, 25, 50]
    assert tile_starts(30, 40, 10) == [0]
    for length, tile, stride in [(101, 32, 20), (64, 32, 32), (500, 128, 85)]:
        starts = tile_starts(length, tile, stride)
        covered = torch.zeros(length, dtype=torch.bool)
        for start in starts:
            covered[start : start + tile] = True
        assert covered.all()
        assert starts[-1] + tile == length
    with pytest.raises(ValueError, match="stride"):
        tile_starts(100, 10, 20)


@pytest.mark.parametrize("blend", ["uniform", "gaussian", "ramp"])
def test_blend_window_positive_peak_at_centre(blend: str) -> None:
    window = blend_window(9, 7, blend)
    assert window.shape == (9, 7)
    assert window.min() > 0
    assert window[4, 3] == pytest.approx(1.0)
    if blend != "uniform":
        assert window[0, 0] < window[4, 3]


@pytest.mark.parametrize("blend", ["uniform", "gaussian", "ramp"])
@pytest.mark.parametrize("size", [(37, 53), (20, 20), (15, 70)])
def test_sliding_equals_whole_for_pointwise_model(blend: str, size: tuple[int, int]) -> None:
    model = PointwiseNet().eval()
    images = torch.randn(2, 3, *size)
    whole = predict_logits(model, images, mode="whole")
    sliding = predict_logits(
        model, images, mode="sliding", tile_size=(16, 24), overlap=0.25, blend=blend, tile_batch=3
    )
    assert sliding.shape == (2, NUM_CLASSES, *size)
    torch.testing.assert_close(sliding, whole, atol=1e-5, rtol=1e-5)


def test_sliding_image_smaller_than_tile_is_padded_and_cropped() -> None:
    model = PointwiseNet().eval()
    images = torch.randn(1, 3, 10, 13)
    logits = predict_logits(model, images, mode="sliding", tile_size=32)
    assert logits.shape == (1, NUM_CLASSES, 10, 13)
    torch.testing.assert_close(logits, model(images), atol=1e-5, rtol=1e-5)


def test_sliding_tiles_all_have_the_tile_shape() -> None:
    seen: list[tuple[int, ...]] = []
    model = CoarseNet().eval()

    def recording(x: Tensor) -> Tensor:
        seen.append(tuple(x.shape))
        return model(x)

    sliding_window_logits(recording, torch.randn(1, 3, 45, 70), tile_size=(32, 32), overlap=0.5)
    assert len(seen) == len(tile_starts(45, 32, 16)) * len(tile_starts(70, 32, 16))
    assert set(seen) == {(1, 3, 32, 32)}


def test_sliding_blends_overlap_as_weighted_mean() -> None:
    """Two tiles overlapping on one column: that column is the weight-normalised mean."""
    calls: list[int] = []

    def constant_per_call(x: Tensor) -> Tensor:
        calls.append(1)
        return torch.full((x.shape[0], 1, *x.shape[-2:]), float(len(calls)))

    logits = sliding_window_logits(
        constant_per_call, torch.zeros(1, 3, 4, 7), tile_size=4, tile_stride=3, blend="uniform"
    )
    # Tiles at x=0 (value 1) and x=3 (value 2) overlap on column 3.
    assert logits[0, 0, 0].tolist() == [1, 1, 1, 1.5, 2, 2, 2]


def test_sliding_differs_from_whole_for_context_model_but_agrees_mostly() -> None:
    model = CoarseNet().eval()
    images = torch.randn(1, 3, 64, 96)
    whole = predict_logits(model, images)
    sliding = predict_logits(model, images, mode="sliding", tile_size=48, overlap=0.5)
    assert not torch.allclose(whole, sliding)  # tiles lose context at their borders
    agreement = (whole.argmax(1) == sliding.argmax(1)).float().mean()
    assert agreement > 0.8


def test_multiscale_single_scale_no_flip_is_log_softmax_of_whole() -> None:
    model = CoarseNet().eval()
    images = torch.randn(2, 3, 33, 41)
    logits = predict_logits(model, images, mode="multiscale", scales=[1.0], flip=False)
    torch.testing.assert_close(logits, torch.log_softmax(model(images), 1), atol=1e-5, rtol=1e-4)


def test_multiscale_flip_matches_manual_average() -> None:
    model = CoarseNet().eval()
    images = torch.randn(1, 3, 32, 48)
    probs = predict_probs(model, images, mode="multiscale", scales=[1.0, 0.5], flip=True)
    with torch.no_grad():
        expected = torch.softmax(model(images), 1)
        expected += torch.softmax(model(images.flip(-1)), 1).flip(-1)
        half = F.interpolate(images, size=(16, 24), mode="bilinear", align_corners=False)
        for variant, flipped in [(half, False), (half.flip(-1), True)]:
            p = torch.softmax(model(variant), 1)
            p = p.flip(-1) if flipped else p
            expected += F.interpolate(p, size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(probs, expected / 4, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 32, 48), atol=1e-5, rtol=0)


def test_multiscale_with_sliding_inner_uses_tiles_at_every_scale() -> None:
    shapes: list[tuple[int, ...]] = []
    model = PointwiseNet().eval()

    def recording(x: Tensor) -> Tensor:
        shapes.append(tuple(x.shape[-2:]))
        return model(x)

    images = torch.randn(1, 3, 40, 60)
    logits = predict_logits(
        recording, images, mode="multiscale", scales=[0.5, 1.5], inner="sliding", tile_size=24
    )
    assert set(shapes) == {(24, 24)}
    assert logits.shape == (1, NUM_CLASSES, 40, 60)
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 40, 60), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["whole", "sliding", "multiscale"])
def test_multi_head_models_give_dicts(mode: str) -> None:
    model = TwoHeadNet().eval()
    images = torch.randn(1, 3, 20, 30)
    out = predict_probs(model, images, mode=mode, tile_size=16, scales=[0.75, 1.0])
    assert set(out) == {"semantic", "geometric"}
    assert out["semantic"].shape == (1, NUM_CLASSES, 20, 30)
    assert out["geometric"].shape == (1, 2, 20, 30)
    torch.testing.assert_close(out["geometric"].sum(1), torch.ones(1, 20, 30))


def test_bad_arguments_raise_value_errors() -> None:
    model = PointwiseNet().eval()
    images = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        predict_logits(model, images, mode="tiles")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tile_size"):
        predict_logits(model, images, mode="sliding")
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        predict_logits(model, images[0])
    with pytest.raises(ValueError, match="blend"):
        predict_logits(model, images, mode="sliding", tile_size=4, blend="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scales"):
        multiscale_flip_probs(model, images, scales=[])
    with pytest.raises(ValueError, match="unknown"):
        predict_probs(model, images, tile_sise=4)


def test_no_autograd_graph_is_kept() -> None:
    model = CoarseNet().eval()
    logits = predict_logits(model, torch.randn(1, 3, 16, 16), mode="sliding", tile_size=8)
    assert not logits.requires_grad
