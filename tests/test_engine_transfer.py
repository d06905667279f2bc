"""New classes from a trained model (`model.init`, engine/transfer.py): the class-score layers a
head declares are re-initialised, every other tensor is copied bit-exactly, the mapping is
printed, a weights file supplies the model the recipe leaves unset, and a recipe option that
would leave trained tensors uncopied is refused in one line.

The nets are tiny FCNs on tests/model_helpers.PoolBackbone, registered under a test-only name
so that weights files can name them; data is the synthetic set.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from model_helpers import PoolBackbone

from fcnseg.config import config_from_dict, load_config
from fcnseg.engine.checkpoint import save_weights, weights_metadata
from fcnseg.engine.recipe import resolve_recipe
from fcnseg.engine.transfer import adopt_init_model, class_score_layers, initialise_with_mapping
from fcnseg.errors import RecipeError
from fcnseg.models import build_model
from fcnseg.models.heads.fcn import FCNHead, SkipFCN
from fcnseg.models.registry import register_model, registered_names

TINY = "test_transfer_tiny_fcn8s"
ROOT = Path(__file__).resolve().parents[1]


def build_tiny(
    num_classes: int,
    pretrained: bool = False,
    head_channels: int = 0,
    upsample: str = "deconv_frozen",
    input_scale: float = 1.0,
) -> SkipFCN:
    backbone = PoolBackbone(width=4)
    head = FCNHead(
        backbone.channels,
        backbone.strides,
        num_classes,
        "fcn8s",
        head_channels=head_channels,
        upsample=upsample,  # type: ignore[arg-type]
    )
    return SkipFCN(backbone, head, input_scale=input_scale)


@pytest.fixture(autouse=True, scope="module")
def tiny_model_registered():
    """TINY is in the registry only while this module's tests run: the table and listing
    tests check that the registry holds the shipped models and nothing else."""
    from fcnseg.models import registry

    if TINY not in registered_names():
        register_model(TINY, description="test-only tiny FCN-8s on PoolBackbone")(build_tiny)
    yield
    registry._TABLE.pop(TINY, None)


#: What the tiny FCN-8s head declares with learnable deconvolutions: three 1x1 class scorers
#: and the three class-wide upsamplers.
TINY_SCORE_LAYERS = {
    "head.score_fr.score",
    "head.score_s16.score",
    "head.score_s8.score",
    "head.upscore_s16.deconv",
    "head.upscore_s8.deconv",
    "head.upscore_final.deconv",
}
OPTIONS = {"head_channels": 4, "upsample": "deconv_learnable"}


def trained_weights(path: Path, classes: list[str], **options) -> dict[str, torch.Tensor]:
    """A 'trained' tiny net (every tensor perturbed, so none equals a fresh one) saved as a
    weights file describing itself; its tensors."""
    torch.manual_seed(7)
    options = {**OPTIONS, **options}
    model = build_model(TINY, len(classes), **options)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) + 0.5)
    metadata = weights_metadata(
        TINY,
        options,
        num_classes=len(classes),
        classes=classes,
        palette=[[i, i, i] for i in range(len(classes))],
        normalization="imagenet",
        ignore_index=255,
        data_format="synthetic",
    )
    save_weights(path, model, metadata)
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_heads_declare_their_class_score_layers():
    model = build_model(TINY, 3, **OPTIONS)
    assert set(class_score_layers(model)) == TINY_SCORE_LAYERS
    bilinear = build_model(TINY, 3, head_channels=4, upsample="bilinear")
    assert set(class_score_layers(bilinear)) == {
        n for n in TINY_SCORE_LAYERS if n.endswith(".score")
    }
    fpn = build_model("fpnlite_resnet18", 3, pretrained=False)
    assert class_score_layers(fpn) == ("head.score",)
    with torch.device("meta"):  # the paper's VGG16 FCN-8s, built without memory
        paper = build_model("fcn8s_vgg16", 3, pretrained=False)
    assert set(class_score_layers(paper)) == {
        "score_fr",
        "score_pool4",
        "score_pool3",
        "upscore2",
        "upscore_pool4",
        "upscore8",
    }
    assert all(layer not in class_score_layers(paper) for layer in paper.trunk_module_names)


@pytest.mark.parametrize("new_classes", [["a", "b", "c"], ["x", "y", "z", "w", "v"]])
def test_score_layers_reinitialised_and_the_rest_copied_bit_exactly(tmp_path, capsys, new_classes):
    """Other classes: 3 of them (other shapes), or 5 other names (same shapes: still re-init)."""
    source = trained_weights(tmp_path / "w.safetensors", ["c0", "c1", "c2", "c3", "c4"])
    torch.manual_seed(11)
    model = build_model(TINY, len(new_classes), **OPTIONS)
    fresh = {key: value.clone() for key, value in model.state_dict().items()}
    mapping = initialise_with_mapping(model, str(tmp_path / "w.safetensors"), classes=new_classes)
    state = model.state_dict()
    scored = {key for key in state if key.rsplit(".", 1)[0] in TINY_SCORE_LAYERS}
    assert scored and set(mapping.reinitialised) == scored
    for key, value in state.items():
        if key in scored:
            assert torch.equal(value, fresh[key]), key  # as a fresh model builds it
        else:
            assert torch.equal(value, source[key]), key  # the trained tensor, bit for bit
    assert set(mapping.copied) == set(state) - scored
    printed = capsys.readouterr().out
    assert f"5 classes -> {len(new_classes)}" in printed
    reinit_line = next(line for line in printed.splitlines() if "re-initialised" in line)
    assert set(reinit_line.split(": ", 1)[1].split(", ")) == TINY_SCORE_LAYERS
    assert f"copied {len(state) - len(scored)} tensors bit-exactly" in printed


def test_same_classes_copy_the_score_layers_too(tmp_path, capsys):
    """Fine-tuning on the classes the file has (and the paper's stage-wise init) copies all."""
    classes = ["c0", "c1", "c2"]
    source = trained_weights(tmp_path / "w.safetensors", classes)
    model = build_model(TINY, 3, **OPTIONS)
    mapping = initialise_with_mapping(model, str(tmp_path / "w.safetensors"), classes=classes)
    assert mapping.reinitialised == [] and set(mapping.copied) == set(source)
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())
    assert "re-initialised (class-score layers): none" in capsys.readouterr().out


def synthetic_recipe(init: Path, **model) -> dict:
    return {
        "model": {"init": str(init), **model},
        "data": {"format": "synthetic", "options": {"num_images": 2, "size": [32, 32]}},
        "train": {"device": "cpu", "epochs": 1, "batch_size": 1, "progress": False},
    }


def test_model_name_and_options_come_from_the_weights_metadata(tmp_path):
    trained_weights(tmp_path / "w.safetensors", ["c0", "c1"])
    config = config_from_dict(synthetic_recipe(tmp_path / "w.safetensors"))
    assert config.model.name != TINY  # the schema default, before the weights are read
    adopted = adopt_init_model(config)
    assert adopted.model.name == TINY
    assert adopted.model.options == OPTIONS
    assert adopted.model.pretrained is False
    # A recipe value wins, key by key; the weights fill the others.
    config = config_from_dict(
        synthetic_recipe(tmp_path / "w.safetensors", options={"input_scale": 1.5})
    )
    assert resolve_recipe(config).model.options == {**OPTIONS, "input_scale": 1.5}


def test_training_setup_builds_the_weights_model_and_prints_the_mapping(tmp_path, capsys):
    from fcnseg.engine.setup import prepare_training

    source = trained_weights(tmp_path / "w.safetensors", ["c0", "c1", "c2", "c3", "c4"])
    config = resolve_recipe(config_from_dict(synthetic_recipe(tmp_path / "w.safetensors")))
    setup = prepare_training(config, torch.device("cpu"))
    assert setup.metadata["model"] == TINY and setup.metadata["model_options"] == OPTIONS
    body = [k for k in source if k.rsplit(".", 1)[0] not in TINY_SCORE_LAYERS]
    assert all(torch.equal(setup.model.state_dict()[k], source[k]) for k in body)
    printed = capsys.readouterr().out
    copied_line = next(line for line in printed.splitlines() if "copied" in line)
    # The copied 3x3 blocks are named apart from the re-initialised scorers beside them.
    assert "backbone.layers (10)" in copied_line and "head.score_fr.block (6)" in copied_line
    assert "head.score_fr.score" not in copied_line


def test_an_option_that_changes_trained_tensors_is_refused_in_one_line(tmp_path):
    from fcnseg.engine.setup import prepare_training

    trained_weights(tmp_path / "w.safetensors", ["c0", "c1"])
    recipe = synthetic_recipe(tmp_path / "w.safetensors", options={"head_channels": 8})
    config = resolve_recipe(config_from_dict(recipe))
    with pytest.raises(RecipeError) as error:
        prepare_training(config, torch.device("cpu"))
    message = str(error.value)
    assert "\n" not in message
    assert "model.options.head_channels=8 (the weights' is 4)" in message
    assert "remove it from the recipe" in message


def test_an_option_that_changes_no_tensor_is_allowed_and_noted(tmp_path, capsys):
    trained_weights(tmp_path / "w.safetensors", ["c0", "c1"])
    recipe = synthetic_recipe(tmp_path / "w.safetensors", options={"input_scale": 1.5})
    config = resolve_recipe(config_from_dict(recipe))
    model = build_model(config.model.name, 2, **config.model.options)
    initialise_with_mapping(model, config.model.init, classes=["c0", "c1"], config=config)
    assert "model.options.input_scale=1.5 (the weights' is None): no tensor changes" in (
        capsys.readouterr().out
    )


def test_readme_transfer_command_parses():
    """The README's worked example: its train command parses and names the shipped model."""
    from fcnseg.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## New classes from a trained model", 1)[1].split("\n## ", 1)[0]
    line = re.search(
        r"^(?:\.venv/bin/)?fcnseg train --config configs/camvid3_transfer\.yaml.*$", section, re.M
    )
    assert line is not None
    args = build_parser().parse_args(shlex.split(line.group(0))[1:])
    overrides = list(args.overrides) + ["data.root=/nonexistent"]
    config = load_config(ROOT / args.config, overrides)
    config.model.init = str(ROOT / config.model.init)
    adopted = adopt_init_model(config)
    assert adopted.model.name == "fcn4s_efficientnet_lite0"
    assert adopted.model.options["head_channels"] == 64
    assert set(config.data.class_map.values()) == {"background", "object", "flat"}
