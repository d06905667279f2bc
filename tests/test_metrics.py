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


# --------------------------------------------------------------------- trimap (boundary band)
def _split(width: int = 8, column: int = 4) -> torch.Tensor:
    """8 x width labels: class 0 left of `column`, class 1 from it on."""
    labels = torch.zeros(8, width, dtype=torch.long)
    labels[:, column:] = 1
    return labels


def test_boundary_is_both_sides_of_a_label_edge():
    from fcnseg.metrics import boundary_mask

    boundary = boundary_mask(_split())
    assert boundary[:, 3].all() and boundary[:, 4].all() and int(boundary.sum()) == 16
    single = torch.zeros(9, 9, dtype=torch.long)
    single[4, 4] = 2
    plus = boundary_mask(single)  # the pixel and its 4 neighbours, not the diagonals
    assert sorted(map(tuple, plus.nonzero().tolist())) == [(3, 4), (4, 3), (4, 4), (4, 5), (5, 4)]


def test_band_is_the_chessboard_distance_to_the_boundary():
    from fcnseg.metrics import boundary_band, boundary_mask

    boundary = boundary_mask(_split())
    assert boundary_band(boundary, 0).equal(boundary)
    assert boundary_band(boundary, 2).sum(0).tolist() == [0, 8, 8, 8, 8, 8, 8, 0]
    assert bool(boundary_band(boundary, 10).all())
    single = torch.zeros(9, 9, dtype=torch.long)
    single[4, 4] = 2
    # The plus dilated by a 3x3 square: the 5x5 square around (4, 4) without its 4 corners.
    band = boundary_band(boundary_mask(single), 1)
    assert int(band.sum()) == 21 and not band[2, 2] and band[2, 3] and band[3, 3]


def test_trimap_scores_by_hand():
    """The prediction puts the edge one column late: column 4 (class 1) is predicted 0."""
    from fcnseg.metrics import TrimapScores

    trimap = TrimapScores(2, 255, (2, 0, 20))
    trimap(_split(column=5)[None], _split(column=4)[None])
    scores = trimap.scores()
    assert trimap.pixels() == {0: 16, 2: 48, 20: 64}
    # Band 0 (columns 3, 4): 8 of 16 right; IU 8/16 for class 0, 0/8 for class 1.
    assert scores[0].pixel_accuracy == pytest.approx(0.5)
    assert scores[0].mean_iu == pytest.approx(0.25)
    # Band 2 (columns 1..6): 40 of 48 right; IU 24/32 and 16/24.
    assert scores[2].pixel_accuracy == pytest.approx(40 / 48)
    assert scores[2].mean_iu == pytest.approx((24 / 32 + 16 / 24) / 2)
    # A band over the whole image: the whole-image scores.
    whole = ConfusionMatrix(2, 255)
    whole.update(_split(column=5), _split(column=4))
    assert scores[20] == whole.scores()


def test_trimap_never_scores_ignore_pixels_but_they_make_boundaries():
    """VOC-style outline: a column of ignore (255) between class 0 and class 1."""
    from fcnseg.metrics import TrimapScores

    target = _split(width=9, column=5)
    target[:, 4] = 255
    trimap = TrimapScores(2, 255, (0, 1))
    trimap(target.clone(), target)
    assert trimap.pixels() == {0: 16, 1: 32}  # columns 3 and 5; then 2..6 without column 4
    assert trimap.scores()[1].mean_iu == 1.0
    with pytest.raises(ValueError, match="widths must be >= 0"):
        TrimapScores(2, 255, (-1,))
