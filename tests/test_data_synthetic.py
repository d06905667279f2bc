"""The synthetic street dataset: deterministic, split-disjoint, all classes, not colour-solvable."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fcnseg.data.datasets.synthetic import SyntheticStreets
from fcnseg.data.transforms import train_transform
from fcnseg.metrics import ConfusionMatrix, compute_scores


def test_same_index_gives_same_image_in_a_new_instance():
    first = SyntheticStreets(split="train", num_images=4).load(2)
    second = SyntheticStreets(split="train", num_images=4).load(2)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_splits_and_seeds_give_different_images():
    train = SyntheticStreets(split="train", num_images=2).load(0)[0]
    val = SyntheticStreets(split="val", num_images=2).load(0)[0]
    other_seed = SyntheticStreets(split="train", num_images=2, seed=1).load(0)[0]
    assert not torch.equal(train, val)
    assert not torch.equal(train, other_seed)


def test_shapes_dtypes_and_label_set():
    dataset = SyntheticStreets(split="val", num_images=8, size=(64, 96))
    seen: set[int] = set()
    for index in range(len(dataset)):
        image, mask = dataset[index]
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 96)
        assert mask.dtype == torch.int64 and mask.shape == (64, 96)
        seen |= {int(v) for v in mask.unique()}
    assert seen <= set(range(dataset.num_classes)) | {dataset.ignore_index}
    assert {0, 1, 2, 3, 4} <= seen  # sky, building, road, car, pole all occur in 8 scenes
    assert dataset.ignore_index in seen  # the void band around objects


def test_void_band_touches_objects_only():
    image, mask = SyntheticStreets(split="train", num_images=1).load(0)
    void = mask == 255
    objects = (mask == 3) | (mask == 4) | (mask == 5)
    grown = torch.nn.functional.max_pool2d(objects[None, None].float(), 3, 1, 1)[0, 0] > 0
    assert void.any()
    assert bool((void <= grown).all())


def test_per_pixel_colour_classifier_cannot_solve_it():
    """A colour lookup table fitted on train labels must score a low mean IU on val."""
    bins = 16
    levels = 256 // bins
    train = SyntheticStreets(split="train", num_images=30, size=(64, 80))
    val = SyntheticStreets(split="val", num_images=10, size=(64, 80))

    def codes(image):
        q = image.numpy().astype(np.int64) // bins
        return (q[0] * levels + q[1]) * levels + q[2]

    counts = np.zeros((levels**3, train.num_classes))
    for index in range(len(train)):
        image, mask = train.load(index)
        labelled = mask.numpy() != 255
        np.add.at(counts, (codes(image)[labelled], mask.numpy()[labelled]), 1)
    lookup = counts.argmax(1)
    matrix = ConfusionMatrix(val.num_classes, 255)
    for index in range(len(val)):
        image, mask = val.load(index)
        matrix.update(torch.from_numpy(lookup[codes(image)]), mask)
    scores = compute_scores(matrix.matrix)
    assert 0.1 < scores.mean_iu < 0.5


def test_dataset_with_transform_is_picklable_for_workers():
    dataset = SyntheticStreets(split="train", num_images=2, transform=train_transform("imagenet"))
    clone = pickle.loads(pickle.dumps(dataset))
    image, mask = clone[0]
    assert image.dtype == torch.float32 and mask.dtype == torch.int64


@pytest.mark.parametrize("kwargs", [{"split": "holdout"}, {"num_images": 0}, {"size": (8, 8)}])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        SyntheticStreets(**kwargs)
