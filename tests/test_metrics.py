"""The four FCN scores against values computed by hand on small confusion matrices."""

import math

import pytest
import torch

from fcnseg.metrics import ConfusionMatrix, compute_scores


def test_scores_match_hand_computation() -> None:
    # rows = ground truth, columns = prediction
    hist = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    s = compute_scores(hist)
    # class 2 is absent from both sides: excluded from the means (nanmean rule)
    assert s.pixel_accuracy == pytest.approx(7 / 10)
    assert s.mean_accuracy == pytest.approx((3 / 4 + 4 / 6) / 2)
    iu0, iu1 = 3 / (4 + 5 - 3), 4 / (6 + 5 - 4)
    assert s.mean_iu == pytest.approx((iu0 + iu1) / 2)
    assert s.frequency_weighted_iu == pytest.approx(0.4 * iu0 + 0.6 * iu1)
    assert math.isnan(s.per_class_iu[2]) and math.isnan(s.per_class_accuracy[2])


def test_predicted_but_absent_class_counts_as_zero_iu() -> None:
    hist = torch.tensor([[2, 2], [0, 0]])  # class 1 never in ground truth, but predicted
    s = compute_scores(hist)
    assert s.per_class_iu == pytest.approx([0.5, 0.0])
    assert s.mean_iu == pytest.approx(0.25)
    assert s.mean_accuracy == pytest.approx(0.5)  # accuracy of class 1 undefined: excluded


def test_update_ignores_void_and_out_of_range_labels() -> None:
    cm = ConfusionMatrix(num_classes=3, ignore_index=255)
    target = torch.tensor([[0, 1, 255], [2, 7, 1]])
    prediction = torch.tensor([[0, 2, 1], [2, 0, 1]])
    cm.update(prediction, target)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[0, 0] = 1
    expected[1, 2] = 1
    expected[2, 2] = 1
    expected[1, 1] = 1
    assert torch.equal(cm.matrix, expected)


def test_all_ignore_image_gives_zero_scores_not_nan() -> None:
    cm = ConfusionMatrix(num_classes=4, ignore_index=11)
    cm.update(torch.zeros(5, 5, dtype=torch.int64), torch.full((5, 5), 11))
    s = cm.scores()
    assert cm.matrix.sum() == 0
    for value in (s.pixel_accuracy, s.mean_accuracy, s.mean_iu, s.frequency_weighted_iu):
        assert value == 0.0


def test_perfect_prediction_scores_one() -> None:
    cm = ConfusionMatrix(num_classes=3)
    target = torch.randint(0, 3, (2, 9, 9))
    cm.update(target.clone(), target)
    s = cm.scores()
    present = target.unique().numel()
    assert s.pixel_accuracy == s.mean_iu == s.frequency_weighted_iu == pytest.approx(1.0)
    assert sum(not math.isnan(v) for v in s.per_class_iu) == present


def test_shape_mismatch_is_an_error() -> None:
    cm = ConfusionMatrix(num_classes=2)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(3, 2, dtype=torch.int64))
