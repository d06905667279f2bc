"""MultiHeadFCN: one trunk computed once, a dictionary of score heads (SIFT Flow's net)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg import build_model, list_models
from fcnseg.constants import SIFTFLOW_NUM_GEOMETRIC, SIFTFLOW_NUM_SEMANTIC
from fcnseg.losses import PerHeadLoss, PixelCrossEntropy
from fcnseg.models.caffe import expected_layer_names
from fcnseg.models.multihead import MultiHeadFCN, split_trunk

HEADS = {"semantic": SIFTFLOW_NUM_SEMANTIC, "geometric": SIFTFLOW_NUM_GEOMETRIC}
SIZE = (32, 48)
SKIP_BASE = "fcn8s_resnet18"
PAPER_BASE = "fcn16s_vgg16"
#: Options that make each base small enough for a unit test (same structure and layer names).
SMALL = {SKIP_BASE: {"pretrained": False}, PAPER_BASE: {"width_divisor": 16}}


class TinySplitFCN(nn.Module):
    """A stand-in that follows SharedTrunkModel: a counted trunk, a class-dependent score."""

    trunk_module_names = ("body",)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.score = nn.Conv2d(8, num_classes, 1)
        self.num_classes, self.in_channels = num_classes, 3
        self.normalization, self.head_classes = "imagenet", {}
        self.trunk_calls = 0

    def trunk_features(self, x):
        self.trunk_calls += 1
        return self.body(x)

    def score_features(self, shared, x):
        return F.interpolate(self.score(shared), size=x.shape[-2:], mode="bilinear")

    def forward(self, x):
        return self.score_features(self.trunk_features(x), x)


class PlainFCN(nn.Module):
    """A model that does not say how it splits into trunk and heads."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(3, num_classes, 1)
        self.num_classes, self.in_channels = num_classes, 3
        self.normalization, self.head_classes = "imagenet", {}

    def forward(self, x):
        return self.score(x)


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *SIZE, generator=torch.Generator().manual_seed(0))


def _tiny() -> MultiHeadFCN:
    torch.manual_seed(0)
    return MultiHeadFCN.from_builder(TinySplitFCN, HEADS)


def _real(base: str) -> MultiHeadFCN:
    if base not in list_models():
        pytest.skip(f"{base} is not registered in this checkout")
    torch.manual_seed(0)
    return build_model("multihead", SIFTFLOW_NUM_SEMANTIC, base=base, heads=HEADS, **SMALL[base])


def _is_score(name: str) -> bool:
    """A class-scoring layer's parameter (score_fr, score_pool4, ...; not the upsamplers)."""
    return "score" in name and "upscore" not in name


def _randomise_scores(model: nn.Module) -> None:
    """The paper zero-initialises score layers; random ones make the heads' outputs differ."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if _is_score(name):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def test_the_trunk_runs_once_per_forward_and_each_head_has_its_classes():
    model = _tiny()
    out = model(_images())
    assert list(out) == list(HEADS)
    for name, classes in HEADS.items():
        assert out[name].shape == (2, classes, *SIZE)
    assert model.trunk.trunk_calls == 1
    assert model.head_classes == HEADS and model.num_classes == SIFTFLOW_NUM_SEMANTIC


@pytest.mark.parametrize("base", [SKIP_BASE, PAPER_BASE])
def test_each_head_equals_the_single_head_net_on_the_same_weights(base):
    model = _real(base).eval()
    _randomise_scores(model)
    x = _images(batch=1)
    with torch.no_grad():
        out = model(x)
        for name, classes in HEADS.items():
            single = build_model(base, classes, **SMALL[base]).eval()
            # The trunk's and the head's keys together are exactly the single net's keys.
            single.load_state_dict({**model.trunk.state_dict(), **model.heads[name].state_dict()})
            assert torch.equal(out[name], single(x))


@pytest.mark.parametrize("base", [SKIP_BASE, PAPER_BASE])
def test_parameters_hold_the_trunk_once_and_gradients_reach_it_and_both_heads(base):
    model = _real(base).train()
    parameters = list(model.parameters())
    assert len(parameters) == len({id(p) for p in parameters})
    trunk = {id(p) for p in model.trunk.parameters()}
    for head in model.heads.values():
        assert trunk.isdisjoint(id(p) for p in head.parameters())
    _randomise_scores(model)
    targets = {name: torch.randint(0, c, (1, *SIZE)) for name, c in HEADS.items()}
    loss = PerHeadLoss({name: PixelCrossEntropy() for name in HEADS})
    loss(model(_images(batch=1)), targets).backward()
    assert all(p.grad is not None for p in model.trunk.parameters() if p.requires_grad)
    for head in model.heads.values():
        grads = [p.grad for n, p in head.named_parameters() if _is_score(n)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_state_dict_keys_name_the_trunk_once_and_each_head_by_task():
    keys = set(_real(PAPER_BASE).state_dict())
    assert {"trunk.encoder.conv1_1.weight", "trunk.fc6.weight", "trunk.fc7.weight"} <= keys
    for name in HEADS:
        assert {f"heads.{name}.score_fr.weight", f"heads.{name}.score_pool4.weight"} <= keys
        assert f"heads.{name}.upscore2.weight" in keys
    assert not any(k.startswith("heads.") and (".encoder." in k or ".fc6." in k) for k in keys)
    skip_keys = set(_real(SKIP_BASE).state_dict())
    assert any(k.startswith("trunk.backbone.") for k in skip_keys)
    assert "heads.geometric.head.score_fr.score.weight" in skip_keys
    assert not any(k.startswith("heads.") and ".backbone." in k for k in skip_keys)


def test_the_release_layer_names_follow_the_heads():
    names = expected_layer_names(_real(PAPER_BASE))
    assert names.count("conv1_1") == 1 and names.count("fc6") == 1
    for layer in ("score_fr", "score_pool4", "upscore2", "upscore16"):
        assert f"{layer}_sem" in names and f"{layer}_geo" in names


def test_state_dict_round_trips_into_a_fresh_model():
    model = _real(SKIP_BASE).eval()
    _randomise_scores(model)
    torch.manual_seed(5)
    other = build_model("multihead", 33, base=SKIP_BASE, heads=HEADS, pretrained=False).eval()
    other.load_state_dict(model.state_dict())
    x = _images(batch=1)
    with torch.no_grad():
        expected, got = model(x), other(x)
    for name in HEADS:
        assert torch.equal(got[name], expected[name])


def test_train_mode_heads_see_one_dropout_draw_of_the_trunk():
    model = _real(PAPER_BASE).train()
    _randomise_scores(model)
    x = _images(batch=1)
    torch.manual_seed(3)
    out = model(x)
    torch.manual_seed(3)
    shared = model.trunk.trunk_features(x)
    for name, head in model.heads.items():
        torch.testing.assert_close(out[name], head.score_features(shared, x))


def test_deepcopy_gives_an_independent_model_with_its_own_trunk():
    model = _tiny()
    clone = copy.deepcopy(model)
    assert clone.trunk is not model.trunk and clone.trunk.body is not model.trunk.body
    with torch.no_grad():
        clone.heads["semantic"].score.weight.add_(1.0)
    x = _images()
    assert not torch.equal(clone(x)["semantic"], model(x)["semantic"])
    assert torch.equal(clone(x)["geometric"], model(x)["geometric"])
    assert clone.trunk.trunk_calls == 2 and model.trunk.trunk_calls == 2


def test_split_trunk_keeps_the_first_nets_trunk_and_every_nets_score_layers():
    nets = {name: TinySplitFCN(classes) for name, classes in HEADS.items()}
    trunk, heads = split_trunk(nets)
    assert trunk.body is nets["semantic"].body and not hasattr(trunk, "score")
    for name, head in heads.items():
        assert head.score is nets[name].score and "body" not in head._modules
    # The parts are copies: the nets they came from keep all their children.
    assert all({"body", "score"} == set(net._modules) for net in nets.values())


def test_bad_heads_and_unsplittable_bases_are_one_line_errors():
    with pytest.raises(ValueError, match="positive class count"):
        MultiHeadFCN.from_builder(TinySplitFCN, {"semantic": 0})
    with pytest.raises(ValueError, match="at least one"):
        MultiHeadFCN.from_builder(TinySplitFCN, {})
    with pytest.raises(ValueError, match="cannot"):
        MultiHeadFCN.from_builder(PlainFCN, HEADS)

    def with_own_parameter(classes: int) -> TinySplitFCN:
        net = TinySplitFCN(classes)
        net.temperature = nn.Parameter(torch.ones(()))
        return net

    with pytest.raises(ValueError, match="cannot"):
        MultiHeadFCN.from_builder(with_own_parameter, HEADS)


def test_without_heads_the_registered_model_has_one_primary_head():
    model = build_model("multihead", 5, base=SKIP_BASE, pretrained=False)
    assert model.head_classes == {"semantic": 5} and model.num_classes == 5
    assert set(model(_images(batch=1))) == {"semantic"}
