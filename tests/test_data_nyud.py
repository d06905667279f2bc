"""NYUDv2 loader on a fixture in the FCN release's layout (PNG images, 16-bit depth, HHA, .mat)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnseg import build_model, list_models
from fcnseg.constants import NYUD_MEAN_LOG_DEPTH_MM, NYUD_NUM_CLASSES
from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.nyud import NYUDv2, normalize_depth
from fcnseg.data.datasets.registry import build_dataset
from fcnseg.data.transforms import denormalize, train_transform
from fcnseg.losses import PixelCrossEntropy

HEIGHT, WIDTH = 24, 32
IDS = {"train": ["5001", "5002"], "test": ["5003"]}


def _sample_arrays(seed: int):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    label = rng.integers(0, NYUD_NUM_CLASSES + 1, (HEIGHT, WIDTH)).astype(np.uint8)  # 0 = void
    # Depth and HHA encode the label, so the test can check that geometry stays aligned.
    depth_mm = (1000 + 10 * label.astype(np.uint16)).astype(np.uint16)
    depth_mm[0, 0] = 0  # a missing measurement, on a void pixel
    label[0, 0] = 0
    hha = np.stack([label * 5, 255 - label * 5, np.full_like(label, 7)], axis=-1).astype(np.uint8)
    return rgb, label, depth_mm, hha


def _write(root, sample_id, seed, label_format="mat", depth_format="png"):
    rgb, label, depth_mm, hha = _sample_arrays(seed)
    for folder in ("data/images", "data/depth", "data/hha", "segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(root / "data/images" / f"img_{sample_id}.png")
    Image.fromarray(hha).save(root / "data/hha" / f"img_{sample_id}.png")
    if depth_format == "png":
        Image.fromarray(depth_mm).save(root / "data/depth" / f"img_{sample_id}.png")
    else:
        scipy.io.savemat(root / "data/depth" / f"img_{sample_id}.mat", {"depth": depth_mm / 1000})
    if label_format == "mat":
        scipy.io.savemat(root / "segmentation" / f"img_{sample_id}.mat", {"segmentation": label})
    else:
        Image.fromarray(label).save(root / "segmentation" / f"img_{sample_id}.png")


@pytest.fixture()
def nyud_root(tmp_path):
    seed = 0
    for split, ids in IDS.items():
        for sample_id in ids:
            _write(tmp_path, sample_id, seed)
            seed += 1
        (tmp_path / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return tmp_path


def test_rgb_only_keeps_the_plain_contract(nyud_root):
    dataset = NYUDv2(nyud_root, split="train")
    image, mask = dataset[0]
    rgb, label, _, _ = _sample_arrays(0)
    assert image.dtype == torch.uint8 and image.shape == (3, HEIGHT, WIDTH)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), rgb)
    np.testing.assert_array_equal(mask.numpy(), np.where(label >= 1, label.astype(int) - 1, 255))
    assert dataset.num_classes == NYUD_NUM_CLASSES and dataset.classes[1] == "floor"
    assert dataset.sample_name(1) == "img_5002" and dataset.in_channels == 3


def test_rgbd_without_transform_stacks_the_normalised_log_depth(nyud_root):
    dataset = NYUDv2(nyud_root, split="train", modalities=("rgb", "depth"))
    x, mask = dataset[0]
    rgb, label, depth_mm, _ = _sample_arrays(0)
    assert x.shape == (4, HEIGHT, WIDTH) and x.dtype == torch.float32
    assert dataset.in_channels == 4
    torch.testing.assert_close(x[:3], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    expected = np.log(np.maximum(depth_mm, 1)) - NYUD_MEAN_LOG_DEPTH_MM
    expected[0, 0] = 0.0  # missing depth becomes the mean
    np.testing.assert_allclose(x[3].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_rgb_hha_gives_six_channels_or_a_dict(nyud_root):
    stacked = NYUDv2(nyud_root, split="test", modalities=("rgb", "hha"))
    x, _ = stacked[0]
    _, _, _, hha = _sample_arrays(2)
    assert x.shape == (6, HEIGHT, WIDTH)
    torch.testing.assert_close(x[3:], torch.from_numpy(hha).permute(2, 0, 1).float() / 255)
    as_dict = build_dataset(
        "nyud", nyud_root, split="test", modalities=("rgb", "hha"), as_dict=True
    )
    inputs, _ = as_dict[0]
    assert set(inputs) == {"rgb", "hha"}
    torch.testing.assert_close(torch.cat([inputs["rgb"], inputs["hha"]]), x)


def test_transform_applies_the_same_geometry_to_every_modality(nyud_root):
    dataset = NYUDv2(nyud_root, split="train", modalities=("rgb", "depth", "hha"), as_dict=True)
    dataset.transform = train_transform("imagenet", crop_size=(20, 40), scale_range=None)
    for seed in range(6):
        torch.manual_seed(seed)
        inputs, mask = dataset[1]
        assert mask.shape == (20, 40) and inputs["depth"].shape == (1, 20, 40)
        labelled = mask != 255
        # Depth was 1000 + 10 * raw label: undo the normalisation and compare.
        depth = torch.exp(inputs["depth"][0] + NYUD_MEAN_LOG_DEPTH_MM)
        torch.testing.assert_close(
            depth[labelled], (1000.0 + 10 * (mask[labelled] + 1)).float(), rtol=1e-5, atol=0
        )
        # HHA channel 0 was 5 * raw label; it went through the image pipeline (no rescaling).
        hha = denormalize(inputs["hha"], "imagenet", as_uint8=True)[0].long()
        torch.testing.assert_close(hha[labelled], 5 * (mask[labelled] + 1))
        # Padding (the crop is wider than the image) is void in the mask and missing depth.
        padded = torch.zeros(20, 40, dtype=torch.bool)
        padded[:, WIDTH:] = True
        assert (mask[padded] == 255).all() and (inputs["depth"][0][padded] == 0).all()


def test_transform_with_rescaling_keeps_depth_on_the_label_grid(nyud_root):
    dataset = NYUDv2(nyud_root, split="train", modalities=("rgb", "depth"))
    dataset.transform = train_transform("caffe_bgr", crop_size=(16, 16), scale_range=(0.5, 2.0))
    for seed in range(6):
        torch.manual_seed(seed)
        x, mask = dataset[0]
        assert x.shape == (4, 16, 16)
        labelled = mask != 255
        depth = torch.exp(x[3] + NYUD_MEAN_LOG_DEPTH_MM)
        torch.testing.assert_close(
            depth[labelled], (1000.0 + 10 * (mask[labelled] + 1)).float(), rtol=1e-5, atol=0
        )


def test_png_labels_and_mat_depth_are_accepted(tmp_path):
    _write(tmp_path, "0007", seed=3, label_format="png", depth_format="mat")
    (tmp_path / "val.txt").write_text("0007\n")
    x, mask = NYUDv2(tmp_path, split="val", modalities=("rgb", "depth"))[0]
    _, label, depth_mm, _ = _sample_arrays(3)
    np.testing.assert_array_equal(mask.numpy(), np.where(label >= 1, label.astype(int) - 1, 255))
    assert math.isclose(
        float(x[3, 1, 1]), math.log(depth_mm[1, 1]) - NYUD_MEAN_LOG_DEPTH_MM, rel_tol=1e-5
    )


def test_errors_name_the_file_and_the_fix(nyud_root):
    with pytest.raises(ValueError, match="modalities"):
        NYUDv2(nyud_root, modalities=("depth",))
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        NYUDv2(nyud_root, split="trainval")
    (nyud_root / "data/hha/img_5002.png").unlink()
    assert len(NYUDv2(nyud_root, split="train", modalities=("rgb", "depth"))) == 2
    with pytest.raises(DataError, match="fcnseg.data.hha"):
        NYUDv2(nyud_root, split="train", modalities=("rgb", "hha"))
    rgb, label, _, _ = _sample_arrays(0)
    scipy.io.savemat(nyud_root / "segmentation/img_5001.mat", {"segmentation": label[:10]})
    with pytest.raises(DataError, match="img_5001.mat"):
        NYUDv2(nyud_root, split="train")[0]


def test_normalize_depth_treats_non_positive_as_missing():
    out = normalize_depth(torch.tensor([[0, -5, 2550]]))
    assert out[0, 0] == 0 and out[0, 1] == 0
    assert float(out[0, 2]) == pytest.approx(math.log(2550) - NYUD_MEAN_LOG_DEPTH_MM, abs=1e-5)


@pytest.mark.skipif("fcn8s_resnet18" not in list_models(), reason="fcn8s_resnet18 not registered")
@pytest.mark.parametrize(
    ("model_name", "modalities"),
    [("early_fusion", ("rgb", "depth")), ("late_fusion", ("rgb", "hha"))],
)
def test_nyud_item_trains_the_fusion_model_end_to_end(nyud_root, model_name, modalities):
    dataset = NYUDv2(nyud_root, split="train", modalities=modalities)
    model = build_model(model_name, NYUD_NUM_CLASSES, base="fcn8s_resnet18", pretrained=False)
    dataset.transform = train_transform(model.normalization, crop_size=(24, 32), scale_range=None)
    items = [dataset[i] for i in range(len(dataset))]  # batch 2: batch norm needs > 1 value
    x = torch.stack([item[0] for item in items])
    mask = torch.stack([item[1] for item in items])
    logits = model(x)
    assert logits.shape == (2, NYUD_NUM_CLASSES, 24, 32)
    loss = PixelCrossEntropy()(logits, mask)
    loss.backward()
    assert torch.isfinite(loss)


def _config_paths(prefix):
    from importlib.resources import files

    return sorted(
        p for p in files("fcnseg").joinpath("configs").iterdir() if p.name.startswith(prefix)
    )


def _small_model_options(base: str) -> dict:
    """Shrink the shipped configs' models for a CPU test: VGG widths / 16, no weight loading."""
    return {"width_divisor": 16} if "vgg" in base else {"pretrained": False}


@pytest.mark.parametrize("config_path", _config_paths("nyud_"), ids=lambda p: p.name)
def test_shipped_nyud_configs_build_data_and_model_and_train_a_step(nyud_root, config_path):
    from fcnseg.config import load_config
    from fcnseg.data.transforms import eval_transform

    config = load_config(str(config_path))
    assert config.data.format == "nyud"
    dataset = build_dataset(
        config.data.format, nyud_root, config.data.train_split, **config.data.options
    )
    options = dict(config.model.options)
    model = build_model(
        config.model.name, dataset.num_classes, **options, **_small_model_options(options["base"])
    )
    dataset.transform = eval_transform(model.normalization)
    x = torch.stack([dataset[0][0], dataset[1][0]])
    mask = torch.stack([dataset[0][1], dataset[1][1]])
    assert x.shape[1] == dataset.in_channels
    logits = model(x)
    assert logits.shape == (2, NYUD_NUM_CLASSES, HEIGHT, WIDTH)
    PixelCrossEntropy()(logits, mask).backward()
