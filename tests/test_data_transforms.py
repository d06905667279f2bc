"""Joint transforms: labels never blended, padding is void, presets match their definitions."""

from __future__ import annotations

import pickle

import pytest
import torch

from fcnseg.constants import CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD
from fcnseg.data.transforms import (
    ColorJitter,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    denormalize,
    eval_transform,
    normalize,
    train_transform,
)


def _pair(height=12, width=16, num_classes=5):
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
    mask = torch.randint(0, num_classes, (height, width), generator=generator)
    return image, mask


def test_imagenet_preset_matches_definition():
    image = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(image, "imagenet")
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out[:, 0, 0], expected)


def test_tf_lite_preset_maps_to_minus_one_one():
    image = torch.tensor([0, 255, 0], dtype=torch.uint8).view(3, 1, 1)
    assert torch.allclose(normalize(image, "tf_lite").flatten(), torch.tensor([-1.0, 1.0, -1.0]))


def test_caffe_preset_is_bgr_0_255_minus_mean():
    rgb = torch.tensor([10, 20, 30], dtype=torch.uint8).view(3, 1, 1)
    out = normalize(rgb, "caffe_bgr").flatten()
    expected = torch.tensor([30.0, 20.0, 10.0]) - torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32)
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("preset", ["imagenet", "tf_lite", "caffe_bgr"])
def test_denormalize_inverts_normalize_on_batches(preset):
    image = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    back = denormalize(normalize(image, preset), preset, as_uint8=True)
    assert torch.equal(back, image)
    assert torch.allclose(normalize(image.float() / 255, preset), normalize(image, preset))


def test_unknown_preset_is_a_value_error():
    with pytest.raises(ValueError, match="preset"):
        Normalize("bgr")


def test_resize_uses_nearest_for_masks():
    image, mask = _pair()
    mask[mask == 2] = 255
    _, resized = Resize((31, 29))(image, mask)
    assert resized.shape == (31, 29) and resized.dtype == torch.int64
    assert set(resized.unique().tolist()) <= set(mask.unique().tolist())


def test_random_scale_keeps_labels_and_pairs_sizes():
    torch.manual_seed(1)
    image, mask = _pair()
    for _ in range(5):
        scaled_image, scaled_mask = RandomScale((0.5, 2.0))(image, mask)
        assert scaled_image.shape[-2:] == scaled_mask.shape
        assert scaled_image.dtype == torch.uint8
        assert set(scaled_mask.unique().tolist()) <= set(mask.unique().tolist())


def test_random_crop_pads_mask_with_void_and_image_with_fill():
    torch.manual_seed(0)
    image = torch.ones(3, 4, 6)
    mask = torch.zeros(4, 6, dtype=torch.int64)
    out_image, out_mask = RandomCrop((8, 10), ignore_index=11, image_fill=0.0)(image, mask)
    assert out_image.shape == (3, 8, 10) and out_mask.shape == (8, 10)
    assert int((out_mask == 11).sum()) == 8 * 10 - 4 * 6
    assert torch.equal(out_image[0] == 0, out_mask == 11)


def test_random_crop_keeps_image_and_mask_aligned():
    torch.manual_seed(0)
    coords = torch.arange(20 * 30).view(20, 30)
    image = coords.expand(3, 20, 30).float()
    out_image, out_mask = RandomCrop((7, 9))(image, coords.clone())
    assert torch.equal(out_image[0].long(), out_mask)


def test_flip_applies_to_both_or_neither():
    image, mask = _pair()
    flipped_image, flipped_mask = RandomHorizontalFlip(p=1.0)(image, mask)
    assert torch.equal(flipped_image, image.flip(-1)) and torch.equal(flipped_mask, mask.flip(-1))
    same_image, same_mask = RandomHorizontalFlip(p=0.0)(image, mask)
    assert torch.equal(same_image, image) and torch.equal(same_mask, mask)


def test_jitter_changes_image_only():
    torch.manual_seed(0)
    image, mask = _pair()
    out_image, out_mask = ColorJitter(0.5)(image, mask)
    assert torch.equal(out_mask, mask)
    assert not torch.allclose(out_image, image.float() / 255)
    assert out_image.min() >= 0 and out_image.max() <= 1


def test_train_transform_output_and_pickling():
    torch.manual_seed(0)
    transform = train_transform("imagenet", crop_size=(8, 8), jitter=0.2, ignore_index=11)
    transform = pickle.loads(pickle.dumps(transform))
    image, mask = transform(*_pair(num_classes=11))
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert mask.shape == (8, 8) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= set(range(12))


def test_eval_transform_resizes_and_normalizes():
    image, mask = _pair()
    out_image, out_mask = eval_transform("caffe_bgr", size=(6, 8))(image, mask)
    assert out_image.shape == (3, 6, 8) and out_mask.shape == (6, 8)
    plain, _ = eval_transform("caffe_bgr")(image, mask)
    assert torch.allclose(plain, normalize(image, "caffe_bgr"))


def test_train_transform_pads_small_images_with_mean_and_void():
    image = torch.full((3, 4, 5), 200, dtype=torch.uint8)
    mask = torch.zeros(4, 5, dtype=torch.int64)
    transform = train_transform(
        "tf_lite", crop_size=(6, 8), scale_range=None, hflip=False, ignore_index=11
    )
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 6, 8) and out_mask.shape == (6, 8)
    assert int((out_mask == 11).sum()) == 6 * 8 - 4 * 5
    assert bool((out_image[:, 4:, :] == 0).all()) and bool((out_image[:, :4, :5] > 0).all())


def test_random_crop_without_padding_never_exceeds_input():
    image, mask = _pair(5, 9)
    out_image, out_mask = RandomCrop((8, 4), pad=False)(image, mask)
    assert out_image.shape == (3, 5, 4) and out_mask.shape == (5, 4)
