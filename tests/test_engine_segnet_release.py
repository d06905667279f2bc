"""The SegNet release's training recipe: solver preset, CamVid class weighting, loss and biases.

Facts from alexgkendall/SegNet-Tutorial at commit bb68b64e72cb004b3ed927fee0f5624dd8097498:
`Models/segnet_solver.prototxt` (base_lr 0.001, momentum 0.9, weight_decay 0.0005, lr_policy
"step" with gamma 1.0, max_iter 40000), `Models/segnet_basic_solver.prototxt` (base_lr 0.1,
max_iter 10000), `Models/bayesian_segnet_solver.prototxt` (max_iter 60000) and
`Models/bayesian_segnet_basic_solver.prototxt` (base_lr 0.1, max_iter 10000); the train
prototxts' DenseImageData `batch_size: 4`, the loss layer's `class_weighting` (0.2595 ...
7.3614) and the convolutions' `param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2
decay_mult: 0 }` (BN layers declare no param). The loss normalisation is caffe-segnet's
(alexgkendall/caffe-segnet at 344c113bf1832886f1cbe9f33ffe28a3beeaf412,
`src/caffe/layers/softmax_loss_layer.cpp`: weighted sum divided by the labelled-pixel count).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fcnseg.config import config_from_dict, load_config
from fcnseg.constants import SEGNET_CAMVID_CLASS_WEIGHTS
from fcnseg.engine.optim import parameter_groups
from fcnseg.engine.recipe import preset_values, resolve_recipe
from fcnseg.losses import PixelCrossEntropy
from fcnseg.models import build_model

CONFIG_DIR = Path(__file__).resolve().parents[1] / "src" / "fcnseg" / "configs"

SOLVERS = {
    "segnet_vgg16": (0.001, 40_000),
    "segnet_basic": (0.1, 10_000),
    "bayesian_segnet_vgg16": (0.001, 60_000),
    "bayesian_segnet_basic": (0.1, 10_000),
}


@pytest.mark.parametrize("model", list(SOLVERS))
def test_release_preset_is_the_solver_prototxt(model):
    lr, max_iter = SOLVERS[model]
    values = preset_values("release", model)
    assert values == {
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "lr": lr,
        "encoder_lr_mult": 1.0,
        "schedule": "fixed",  # "step" with gamma 1.0 never changes the rate
        "warmup_steps": 0,
        "batch_size": 4,
        "accumulate": 1,
        "loss_normalization": "pixels",
        "bias_lr_mult": 2.0,
        "bias_decay_mult": 0.0,
        "bias_mult_scope": "conv",
        "max_steps": max_iter,
        "poly_power": 0.9,  # unused by the fixed schedule
        "score_lr_mult": 1.0,
    }


@pytest.mark.parametrize(
    "recipe,model",
    [
        ("camvid_segnet_basic.yaml", "segnet_basic"),
        ("camvid_segnet_vgg16.yaml", "segnet_vgg16"),
        ("camvid_bayesian_segnet_basic.yaml", "bayesian_segnet_basic"),
        ("camvid_bayesian_segnet_vgg16.yaml", "bayesian_segnet_vgg16"),
    ],
)
def test_recipes_train_with_the_release_weights_and_solver(recipe, model):
    config = resolve_recipe(load_config(CONFIG_DIR / recipe))
    assert config.model.name == model and config.model.pretrained is False
    assert config.data.format == "camvid" and config.data.crop_size is None
    assert config.data.hflip is False and config.data.scale_range == [1.0, 1.0]
    assert tuple(config.data.class_weights) == SEGNET_CAMVID_CLASS_WEIGHTS
    assert config.train.lr == SOLVERS[model][0] and config.train.max_steps == SOLVERS[model][1]
    # Enough epochs of 92 batches (367 images, 4 a batch) for max_iter steps, and no more.
    batches = -(-367 // 4)
    assert (config.train.epochs - 1) * batches < config.train.max_steps
    assert config.train.epochs * batches >= config.train.max_steps


def test_pixels_normalisation_divides_the_weighted_sum_by_labelled_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5)
    target = torch.randint(0, 3, (2, 5, 5))
    target[0, 0] = 255
    weights = [0.2, 1.0, 5.0]
    labelled = int((target != 255).sum())
    per_pixel = F.cross_entropy(
        logits, target, weight=torch.tensor(weights), ignore_index=255, reduction="none"
    )
    ours = PixelCrossEntropy(class_weights=weights, normalization="pixels")(logits, target)
    assert float(ours) == pytest.approx(float(per_pixel.sum()) / labelled, rel=1e-6)
    torch_mean = PixelCrossEntropy(class_weights=weights, normalization="mean")(logits, target)
    assert float(ours) != pytest.approx(float(torch_mean), rel=1e-3)
    plain = PixelCrossEntropy(normalization="pixels")(logits, target)
    assert float(plain) == pytest.approx(float(PixelCrossEntropy()(logits, target)), rel=1e-6)
    void = torch.full((1, 5, 5), 255)
    assert float(PixelCrossEntropy(normalization="pixels")(logits[:1], void)) == 0.0


def test_conv_scope_doubles_conv_biases_but_not_batch_norm_shifts():
    model = build_model("segnet_basic", 3, pretrained=False)
    groups = parameter_groups(
        model, 0.1, 1.0, 5e-4, bias_lr_mult=2.0, bias_decay_mult=0.0, bias_scope="conv"
    )
    by_id = {id(p): group for group in groups for p in group["params"]}
    conv, bn = model.encoder["conv1"], model.encoder["conv1_bn"]
    assert by_id[id(conv.bias)]["lr"] == 0.2 and by_id[id(conv.bias)]["weight_decay"] == 0.0
    assert by_id[id(bn.bias)]["lr"] == 0.1 and by_id[id(bn.bias)]["weight_decay"] == 5e-4
    assert by_id[id(bn.weight)]["weight_decay"] == 5e-4
    classifier = model.decoder["conv_classifier"]
    assert by_id[id(classifier.bias)]["lr"] == 0.2


def test_release_recipe_trains_a_step_on_tiny_data(tmp_path):
    """The recipe's preset and loss run end to end (synthetic 32 x 48 images, 2 steps)."""
    from fcnseg.engine.train import train

    config = load_config(
        CONFIG_DIR / "camvid_bayesian_segnet_basic.yaml",
        [
            "data.format=synthetic",
            "data.root=null",
            "data.options={num_images: 4, size: [32, 48]}",
            "data.class_weights=[0.3, 0.2, 4.5, 0.1, 0.9, 0.4]",  # the synthetic set's 6
            "data.val_split=null",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.epochs=1",
            "train.device=cpu",
        ],
    )
    summary = train(config, out=tmp_path / "run")
    assert summary is not None
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_class_weights_of_another_length_are_a_one_line_error(tmp_path):
    config = config_from_dict(
        {
            "model": {"name": "segnet_basic", "pretrained": False},
            "data": {
                "format": "synthetic",
                "options": {"num_images": 2, "size": [32, 32]},  # 6 classes
                "class_weights": list(SEGNET_CAMVID_CLASS_WEIGHTS),
                "val_split": None,
            },
            "train": {"preset": "release", "device": "cpu", "max_steps": 1},
        }
    )
    from fcnseg.engine.train import train
    from fcnseg.errors import FcnsegError

    with pytest.raises(FcnsegError, match="class_weights") as error:
        train(config, out=tmp_path / "run")
    assert "\n" not in str(error.value)
