"""torchvision.transforms.v2 / albumentations pipelines in place of the built-in augmentations:
from Python and from a recipe (`data.augment`), masks kept aligned with their images."""

from __future__ import annotations

import pickle

import pytest
import torch
from pipeline_factories import flip_crop_v2

from fcnseg.data.pipelines import ExternalPipeline
from fcnseg.data.transforms import train_transform
from fcnseg.errors import RecipeError

H, W = 32, 40


def _position_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose pixels say where they are (R = column, G = row) and a mask that is a
    function of the same position, so any misalignment after a transform is visible."""
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    image = torch.stack([cols * 5, rows * 7, torch.full_like(rows, 9)]).to(torch.uint8)
    return image, (cols * 3 + rows) % 200


def _assert_aligned(image: torch.Tensor, mask: torch.Tensor) -> None:
    cols, rows = image[0].long() // 5, image[1].long() // 7
    assert image.shape[-2:] == mask.shape and mask.dtype == torch.int64
    assert mask.equal((cols * 3 + rows) % 200)


def _check_moved(pipeline: ExternalPipeline) -> None:
    image, mask = _position_pair()
    corners = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out_image, out_mask = pipeline(image, mask)
        _assert_aligned(out_image, out_mask)
        assert out_image.shape[-2:] == (24, 24)
        assert out_image[0, 0, 0] > out_image[0, 0, -1]  # flipped: columns now decrease
        corners.add((int(out_image[0, 0, 0]), int(out_image[1, 0, 0])))
    assert len(corners) > 1  # the crop is random and the mask followed every one


def test_torchvision_v2_flip_and_crop_keep_the_mask_aligned():
    _check_moved(ExternalPipeline(flip_crop_v2()))


def test_albumentations_flip_and_crop_keep_the_mask_aligned():
    pytest.importorskip("albumentations", reason="albumentations is optional; not installed")
    from pipeline_factories import flip_crop_albumentations

    pipeline = ExternalPipeline(flip_crop_albumentations())
    _check_moved(pipeline)
    image, mask = _position_pair()
    draws = []
    for _ in range(2):
        torch.manual_seed(5)  # training seeds torch per sample; albumentations follows it
        draws.append(pipeline(image, mask)[0])
    assert draws[0].equal(draws[1])


def test_recipe_path_pickles_by_path_and_train_transform_normalises():
    pipeline = ExternalPipeline("pipeline_factories:flip_crop_v2")
    copy = pickle.loads(pickle.dumps(pipeline))
    assert copy.spec == "pipeline_factories:flip_crop_v2"
    _check_moved(copy)
    transform = train_transform("imagenet", crop_size=(28, 28), augment=flip_crop_v2())
    image, mask = _position_pair()
    out_image, out_mask = transform(image, mask)
    assert out_image.dtype == torch.float32 and out_image.shape == (3, 28, 28)
    assert (out_mask[24:, :] == 255).all() and (out_mask[:, 24:] == 255).all()
    assert (out_mask[:24, :24] != 255).all()


def test_default_stays_built_in():
    names = [type(step).__name__ for step in train_transform("imagenet", (8, 8)).transforms]
    assert names[:3] == ["RandomScale", "RandomCrop", "RandomHorizontalFlip"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:make", r"cannot import 'no_such_module_xyz'"),
        ("pipeline_factories:missing", r"has no callable 'missing'"),
        ("pipeline_factories", r"must be 'package.module:factory'"),
        ("pipeline_factories:broken", r"broken\(\) raised RuntimeError: no GPU here"),
    ],
)
def test_bad_augment_paths_are_one_line_recipe_errors(spec, message):
    with pytest.raises(RecipeError, match=message):
        ExternalPipeline(spec)


def test_a_pipeline_that_moves_only_the_image_is_refused():
    from torchvision.transforms import v2

    def image_only(image, mask):
        return v2.functional.resize(image, [16, 16]), mask

    with pytest.raises(RecipeError, match=r"an image of \(16, 16\) and a mask of \(32, 40\)"):
        ExternalPipeline(image_only)(*_position_pair())
