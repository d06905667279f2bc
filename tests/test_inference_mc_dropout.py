"""Monte-Carlo dropout (issue 25, item 2): the sampling itself, on tiny in-memory nets.

What must hold: the mean of N samples is the average of N seeded passes with only the dropout
layers on (batch norm keeps its running statistics), a net whose passes are identical gives what
eval mode gives, the uncertainty is the normalised entropy of the mean, and the refusals are one
line each.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fcnseg.engine.metadata import validate_weights_metadata
from fcnseg.engine.session import InferenceSession
from fcnseg.errors import UsageError
from fcnseg.inference.mc_dropout import (
    MCDropout,
    check_runtime,
    dropout_modules,
    mc_dropout_probs,
    predictive_entropy,
    require_dropout,
)
from fcnseg.inference.spec import InferenceSpec

CLASSES = 3


class DropoutNet(nn.Module):
    """conv -> batch norm -> ReLU -> Dropout2d(p) -> 1x1 conv, logits scaled by `sharpness`.

    The batch norm has running statistics far from any batch's own, so a pass that used batch
    statistics (batch norm left in training mode) would give visibly different scores."""

    normalization = "imagenet"
    in_channels = 3
    num_classes = CLASSES

    def __init__(self, p: float = 0.5, sharpness: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout2d(p)
        self.score = nn.Conv2d(8, CLASSES, 1)
        self.sharpness = sharpness
        with torch.no_grad():
            self.bn.running_mean.fill_(0.7)
            self.bn.running_var.fill_(3.0)
        self.bn_modes: list[bool] = []
        self.bn.register_forward_hook(lambda module, *_: self.bn_modes.append(module.training))
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.drop(torch.relu(self.bn(self.conv(images))))
        return self.sharpness * self.score(features)


def metadata():
    return validate_weights_metadata(
        {
            "model": "dropout_net",
            "num_classes": CLASSES,
            "classes": ["a", "b", "c"],
            "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]],
            "normalization": "imagenet",
        },
        "test",
    )


def batch(n: int = 2, size: int = 12) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def whole_probs(model: nn.Module):
    return lambda images: torch.softmax(model(images), dim=1)


def test_mean_of_samples_is_the_average_of_seeded_passes():
    model = DropoutNet(p=0.5)
    images = batch()
    mean = mc_dropout_probs(model, images, whole_probs(model), MCDropout(5, seed=3))
    # The same five passes by hand: seed 3, only the dropout layer in training mode.
    torch.manual_seed(3)
    model.drop.train()
    with torch.no_grad():
        passes = [torch.softmax(model(images), dim=1) for _ in range(5)]
    model.drop.eval()
    assert torch.allclose(mean, torch.stack(passes).mean(0), atol=1e-6)
    assert not torch.allclose(passes[0], passes[1])  # the passes really differ


def test_only_dropout_is_switched_and_every_mode_is_restored():
    model = DropoutNet(p=0.5)
    before = model.bn.running_mean.clone()
    model.bn_modes.clear()
    mc_dropout_probs(model, batch(), whole_probs(model), MCDropout(3))
    assert model.bn_modes == [False, False, False]  # batch norm stayed in eval mode
    assert torch.equal(model.bn.running_mean, before)  # and its statistics were not updated
    assert not any(module.training for module in model.modules())


def test_seeded_runs_repeat_and_leave_the_callers_random_stream_alone():
    model = DropoutNet(p=0.5)
    images = batch()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = mc_dropout_probs(model, images, whole_probs(model), MCDropout(4, seed=7))
    assert torch.equal(torch.rand(3), expected_next)  # fork_rng: the global stream untouched
    again = mc_dropout_probs(model, images, whole_probs(model), MCDropout(4, seed=7))
    other = mc_dropout_probs(model, images, whole_probs(model), MCDropout(4, seed=8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("p", [0.0, 0.5])
def test_one_sample_matches_eval_mode_only_when_dropout_does_nothing(p):
    model = DropoutNet(p=p)
    images = batch()
    with torch.no_grad():
        eval_mode = torch.softmax(model(images), dim=1)
    one = mc_dropout_probs(model, images, whole_probs(model), MCDropout(1))
    if p == 0.0:
        assert torch.allclose(one, eval_mode, atol=1e-7)
    else:
        assert (one - eval_mode).abs().max() > 1e-3


def test_entropy_is_normalised_by_log_classes():
    one_hot = torch.zeros(1, 4, 2, 2)
    one_hot[:, 2] = 1.0
    uniform = torch.full((1, 4, 2, 2), 0.25)
    assert torch.allclose(predictive_entropy(one_hot), torch.zeros(1, 2, 2))
    assert torch.allclose(predictive_entropy(uniform), torch.ones(1, 2, 2))
    half = torch.tensor([0.5, 0.5, 0.0, 0.0]).view(1, 4, 1, 1)
    assert predictive_entropy(half).item() == pytest.approx(math.log(2) / math.log(4))


def test_entropy_is_zero_for_identical_confident_passes_and_positive_when_they_differ():
    images = batch()
    steady = DropoutNet(p=0.0, sharpness=1e4)  # every pass the same, each one confident
    assert predictive_entropy(
        mc_dropout_probs(steady, images, whole_probs(steady), MCDropout(6))
    ).max() == pytest.approx(0.0, abs=1e-6)
    stochastic = DropoutNet(p=0.5, sharpness=1e4)  # each pass confident, passes disagree
    entropy = predictive_entropy(
        mc_dropout_probs(stochastic, images, whole_probs(stochastic), MCDropout(6))
    )
    assert entropy.max() > 0.3 and entropy.min() >= 0.0 and entropy.max() <= 1.0


def test_refusals_are_one_line():
    plain = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    assert dropout_modules(plain) == [] and len(dropout_modules(DropoutNet())) == 1
    with pytest.raises(UsageError) as refused:
        require_dropout(plain, "fcn8s_resnet18")
    message = str(refused.value)
    assert message.startswith("model fcn8s_resnet18 has no dropout layers; --mc-samples needs")
    assert "bayesian_segnet_*" in message and "\n" not in message
    for runtime in ("onnxruntime", "onnxruntime-int8"):
        with pytest.raises(UsageError, match=f"--engine torch.*the {runtime} graph"):
            check_runtime(runtime)
    check_runtime("torch")
    check_runtime("auto")
    for samples in (0, -1, 1001, 2.5, True):
        with pytest.raises(UsageError, match="--mc-samples"):
            MCDropout(samples)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--seed"):
        MCDropout(2, seed=-1)


def test_session_samples_in_every_inference_mode_and_keeps_the_label_path():
    session = InferenceSession.for_model(DropoutNet(p=0.5), metadata())
    images = [torch.randint(0, 256, (3, 16, 20), dtype=torch.uint8) for _ in range(2)]
    plain_labels, none = session.segment(images)
    assert none is None and torch.equal(plain_labels, session.labels(images))
    sampling = session.with_mc(4, seed=2)
    assert session.mc is None  # the original session is unchanged
    labels, uncertainty = sampling.segment(images)
    mean = mc_dropout_probs(
        sampling.runnable,
        sampling.normalize(images),
        whole_probs(sampling.runnable),
        MCDropout(4, 2),
    )
    assert torch.equal(labels, mean.argmax(1))
    assert torch.allclose(uncertainty, predictive_entropy(mean), atol=1e-6)
    assert torch.equal(sampling.labels(images), labels)  # eval's path: argmax of the same mean
    assert sampling.mc.images == 4 and sampling.mc.per_image_ms() > 0  # two calls of 2
    assert "mc-dropout: 4 samples per image (seed 2)" in sampling.mc.summary()
    multiscale = InferenceSpec.parse("multiscale", {"scales": (1.0, 0.5)}, "test")
    scaled = InferenceSession.for_model(DropoutNet(p=0.5), metadata(), spec=multiscale)
    scaled_labels, scaled_uncertainty = scaled.with_mc(3).segment(images)
    assert scaled_labels.shape == (2, 16, 20) and scaled_uncertainty.shape == (2, 16, 20)


def test_session_refuses_a_net_without_dropout():
    plain = nn.Sequential(nn.Conv2d(3, CLASSES, 1)).eval()
    session = InferenceSession.for_model(plain, metadata())
    with pytest.raises(UsageError, match="model dropout_net has no dropout layers"):
        session.with_mc(4)


def test_sampling_composes_with_the_overlap_tile_mode_of_unet2015():
    """U-Net 2015 has dropout at the end of its contracting path (d3c, d4c): every MC pass is a
    whole overlap-tile inference, and the mean is the average of those passes."""
    from fcnseg.inference import predict_probs
    from fcnseg.models import build_model

    torch.manual_seed(0)
    model = build_model("unet2015", CLASSES, width_divisor=16).eval()
    spec = InferenceSpec.parse("overlap_tile", {"tile_size": 25}, "test")
    session = InferenceSession.for_model(model, metadata(), spec=spec).with_mc(3, seed=4)
    image = torch.randint(0, 256, (3, 30, 34), dtype=torch.uint8)
    labels, uncertainty = session.segment([image])
    assert labels.shape == uncertainty.shape == (1, 30, 34)
    torch.manual_seed(4)
    model.dropout_d3c.train()
    model.dropout_d4c.train()
    batch = session.normalize([image])
    passes = [predict_probs(model, batch, "overlap_tile", tile_size=25) for _ in range(3)]
    model.eval()
    mean = torch.stack(passes).mean(0)
    assert not torch.equal(passes[0], passes[1])  # dropout did act (weakly, untrained)
    assert torch.equal(labels, mean.argmax(1))
    assert torch.allclose(uncertainty, predictive_entropy(mean), atol=1e-6)
