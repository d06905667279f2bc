"""SIFT Flow loader on a fixture written in the release's formats (JPEG, .mat struct S, lists)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnseg.constants import SIFTFLOW_NUM_GEOMETRIC, SIFTFLOW_NUM_SEMANTIC, SIFTFLOW_SUBDIR
from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.registry import build_dataset
from fcnseg.data.datasets.siftflow import SIFTFLOW_IGNORE_INDEX, SIFTFlow, apply_to_masks
from fcnseg.data.transforms import train_transform

SIZE = 16  # the real images are 256 x 256; the format does not care


def _write_sample(root, name, semantic, geometric, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    for folder in ("Images", "SemanticLabels", "GeoLabels"):
        (root / folder / SIFTFLOW_SUBDIR).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "Images" / SIFTFLOW_SUBDIR / f"{name}.jpg", quality=95)
    # The release stores labels as double matrices in struct S.
    scipy.io.savemat(root / "SemanticLabels" / SIFTFLOW_SUBDIR / f"{name}.mat", {"S": semantic})
    scipy.io.savemat(root / "GeoLabels" / SIFTFLOW_SUBDIR / f"{name}.mat", {"S": geometric})


def _labels(seed):
    rng = np.random.default_rng(seed)
    semantic = rng.integers(0, SIFTFLOW_NUM_SEMANTIC + 1, (SIZE, SIZE)).astype(np.float64)
    geometric = rng.integers(-1, SIFTFLOW_NUM_GEOMETRIC + 1, (SIZE, SIZE)).astype(np.float64)
    return semantic, geometric


@pytest.fixture()
def siftflow_root(tmp_path):
    names = {"trainval": ["coast_arnat59", "street_par21"], "test": ["highway_bost307"]}
    for split, split_names in names.items():
        for seed, name in enumerate(split_names):
            _write_sample(tmp_path, name, *_labels(seed), seed)
        (tmp_path / f"{split}.txt").write_text("\n".join(split_names) + "\n")
    return tmp_path


def test_item_holds_the_image_and_both_shifted_label_maps(siftflow_root):
    dataset = SIFTFlow(siftflow_root, split="trainval")
    assert len(dataset) == 2
    image, masks = dataset[0]
    semantic, geometric = _labels(0)
    assert image.dtype == torch.uint8 and image.shape == (3, SIZE, SIZE)
    assert set(masks) == {"semantic", "geometric"}
    expected_semantic = np.where(semantic >= 1, semantic - 1, 255)
    expected_geometric = np.where(geometric >= 1, geometric - 1, 255)  # 0 and -1 are void
    np.testing.assert_array_equal(masks["semantic"].numpy(), expected_semantic)
    np.testing.assert_array_equal(masks["geometric"].numpy(), expected_geometric)
    assert masks["semantic"].dtype == torch.int64
    assert dataset.num_classes == SIFTFLOW_NUM_SEMANTIC and dataset.ignore_index == 255
    assert dataset.head_classes == {"semantic": 33, "geometric": 3}
    assert dataset.classes[0] == "awning" and len(dataset.palette) == 33
    assert dataset.sample_name(0) == "coast_arnat59"


def test_registry_builds_the_test_split(siftflow_root):
    dataset = build_dataset("siftflow", siftflow_root, split="test")
    assert isinstance(dataset, SIFTFlow) and len(dataset) == 1


def test_transform_gives_both_maps_the_same_geometry(siftflow_root):
    # The geometric map is a function of the semantic one (g = s mod 3), pixel by pixel; the
    # relation survives a random scale/flip/crop only if both maps get the same geometry.
    rng = np.random.default_rng(7)
    semantic = rng.integers(1, SIFTFLOW_NUM_SEMANTIC + 1, (SIZE, SIZE)).astype(np.float64)
    geometric = (semantic - 1) % SIFTFLOW_NUM_GEOMETRIC + 1
    _write_sample(siftflow_root, "street_par21", semantic, geometric, 1)
    dataset = SIFTFlow(siftflow_root, split="trainval")
    dataset.transform = train_transform("imagenet", crop_size=(12, 12), scale_range=(0.5, 2.0))
    for seed in range(8):
        torch.manual_seed(seed)
        image, masks = dataset[1]
        assert image.shape == (3, 12, 12) and image.dtype == torch.float32
        sem, geo = masks["semantic"], masks["geometric"]
        labelled = sem != 255
        assert labelled.any()
        torch.testing.assert_close(geo[labelled], sem[labelled] % SIFTFLOW_NUM_GEOMETRIC)
        assert ((geo == 255) == ~labelled).all()


def test_apply_to_masks_rewinds_the_random_generators():
    mask = torch.arange(16).reshape(4, 4)

    def random_shift(image, m):
        k = int(torch.randint(0, 4, ()).item())
        return image.roll(k, -1), m.roll(k, -1)

    torch.manual_seed(0)
    _, out = apply_to_masks(random_shift, torch.zeros(1, 4, 4), {"a": mask, "b": mask * 10})
    torch.testing.assert_close(out["b"], out["a"] * 10)


def test_missing_files_and_lists_give_one_line_errors(siftflow_root):
    with pytest.raises(ValueError, match="split 'bogus' is unknown"):
        SIFTFlow(siftflow_root, split="bogus")
    with pytest.raises(DataError, match="paper's split has 2488"):
        SIFTFlow(siftflow_root, split="trainval", check_size=True)
    (siftflow_root / "GeoLabels" / SIFTFLOW_SUBDIR / "street_par21.mat").unlink()
    with pytest.raises(DataError, match="missing, e.g. .*street_par21.mat"):
        SIFTFlow(siftflow_root, split="trainval")
    (siftflow_root / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test.txt"):
        SIFTFlow(siftflow_root, split="test")


def test_label_out_of_range_is_reported(siftflow_root):
    semantic, geometric = _labels(0)
    semantic[0, 0] = 40
    _write_sample(siftflow_root, "coast_arnat59", semantic, geometric, 0)
    with pytest.raises(DataError, match="label values \\[39\\]"):
        SIFTFlow(siftflow_root, split="trainval").load(0)


def _config_paths(prefix):
    from importlib.resources import files

    return sorted(
        p for p in files("fcnseg").joinpath("configs").iterdir() if p.name.startswith(prefix)
    )


@pytest.mark.parametrize("config_path", _config_paths("siftflow_"), ids=lambda p: p.name)
def test_shipped_siftflow_configs_build_data_and_model_and_train_a_step(siftflow_root, config_path):
    from fcnseg import build_model
    from fcnseg.config import load_config
    from fcnseg.data.transforms import eval_transform
    from fcnseg.losses import PerHeadLoss, PixelCrossEntropy
    from fcnseg.metrics import ConfusionMatrix

    config = load_config(str(config_path))
    options = dict(config.data.options)
    if options.pop("check_size", False):  # the fixture is not the paper's 2488 images
        with pytest.raises(DataError, match="2488"):
            build_dataset(
                config.data.format, siftflow_root, config.data.train_split, check_size=True
            )
    dataset = build_dataset(config.data.format, siftflow_root, config.data.train_split, **options)
    model_options = dict(config.model.options)
    small = {"width_divisor": 16} if "vgg" in model_options["base"] else {"pretrained": False}
    model = build_model(config.model.name, dataset.num_classes, **model_options, **small)
    assert model.head_classes == dataset.head_classes
    dataset.transform = eval_transform(model.normalization)
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([item[0] for item in items])
    targets = {
        name: torch.stack([item[1][name] for item in items]) for name in dataset.head_classes
    }
    outputs = model(images)
    loss = PerHeadLoss({name: PixelCrossEntropy() for name in dataset.head_classes})
    loss(outputs, targets).backward()
    for name, classes in dataset.head_classes.items():
        confusion = ConfusionMatrix(classes)
        confusion.update(outputs[name].detach().argmax(1), targets[name])
        assert int(confusion.matrix.sum()) == int((targets[name] != SIFTFLOW_IGNORE_INDEX).sum())
