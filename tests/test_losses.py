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


def test_soft_jaccard_is_one_minus_mean_iou_of_present_classes_for_hard_scores() -> None:
    from fcnseg.losses import SoftJaccardLoss

    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 9]]])  # 9 = void, class 3 absent
    prediction = torch.tensor([[[0, 1, 1, 1], [0, 2, 3, 3]]])
    logits = F.one_hot(prediction, 4).permute(0, 3, 1, 2).float() * 100.0
    loss = SoftJaccardLoss(ignore_index=9, smooth=0.0)(logits, target)
    # IoU: class 0 = 2/3, class 1 = 2/3, class 2 = 1/2; class 3 has no pixels (not averaged),
    # the void pixel's prediction counts nowhere.
    expected = 1.0 - (2 / 3 + 2 / 3 + 1 / 2) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert SoftJaccardLoss(ignore_index=9)(logits, torch.full_like(target, 9)).item() == 0.0


def test_soft_jaccard_gradient_raises_the_thin_class_and_sum_adds_terms() -> None:
    from fcnseg.losses import SoftJaccardLoss, WeightedSumLoss

    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :, 3] = 1  # a one-pixel-wide "pole"
    logits = torch.zeros(1, 2, 8, 8, requires_grad=True)
    SoftJaccardLoss(ignore_index=255)(logits, target).backward()
    assert (logits.grad[0, 1, :, 3] < 0).all()  # descent raises the pole score on the pole
    ce = PixelCrossEntropy(ignore_index=255)
    jac = SoftJaccardLoss(ignore_index=255)
    both = WeightedSumLoss([(1.0, ce), (0.5, jac)])
    value = both(logits.detach(), target)
    assert value.item() == pytest.approx(
        ce(logits.detach(), target).item() + 0.5 * jac(logits.detach(), target).item()
    )
