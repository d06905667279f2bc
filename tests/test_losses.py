"""Pixel cross-entropy: ignore label, normalisation and class weights."""

import pytest
import torch
import torch.nn.functional as F

from fcnseg.losses import PixelCrossEntropy


def _manual_nll(logits: torch.Tensor, target: torch.Tensor, ignore: int) -> torch.Tensor:
    log_probs = logits.log_softmax(1)
    keep = target != ignore
    picked = log_probs.permute(0, 2, 3, 1)[keep]  # (P, C)
    return -picked.gather(1, target[keep][:, None]).squeeze(1)


def test_sum_is_unnormalised_and_mean_divides_by_labelled_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = 255
    per_pixel = _manual_nll(logits, target, 255)
    assert PixelCrossEntropy(normalization="sum")(logits, target) == pytest.approx(
        float(per_pixel.sum()), rel=1e-5
    )
    assert PixelCrossEntropy(normalization="mean")(logits, target) == pytest.approx(
        float(per_pixel.mean()), rel=1e-5
    )


def test_ignored_pixels_get_no_gradient() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 11)
    target[0, 0, 0] = 2
    PixelCrossEntropy(ignore_index=11, normalization="sum")(logits, target).backward()
    grad = logits.grad.abs().sum(1)[0]
    assert grad[0, 0] > 0
    grad[0, 0] = 0
    assert torch.count_nonzero(grad) == 0


def test_all_void_batch_is_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = PixelCrossEntropy(ignore_index=255)(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_class_weights_match_torch_definition() -> None:
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    weights = [0.2, 1.0, 5.0]
    ours = PixelCrossEntropy(class_weights=weights)(logits, target)
    reference = F.cross_entropy(logits, target, weight=torch.tensor(weights))
    assert ours == pytest.approx(float(reference), rel=1e-6)
    assert ours != pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-3)


def test_size_mismatch_and_bad_normalisation_are_errors() -> None:
    with pytest.raises(ValueError, match="normalization"):
        PixelCrossEntropy(normalization="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        PixelCrossEntropy()(torch.randn(1, 2, 4, 4), torch.zeros(1, 5, 5, dtype=torch.int64))
