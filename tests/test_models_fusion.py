"""Early fusion, late fusion and the multi-head FCN, on a tiny stand-in and on registered models."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg import build_model, list_models
from fcnseg.constants import NYUD_NUM_CLASSES, SIFTFLOW_NUM_GEOMETRIC, SIFTFLOW_NUM_SEMANTIC
from fcnseg.losses import PixelCrossEntropy
from fcnseg.models.fusion import (
    LateFusionFCN,
    MultiHeadConfusion,
    MultiHeadFCN,
    SharedModuleRef,
    expand_input_channels,
    find_first_conv,
    multitask_loss,
    share_class_independent_modules,
)

HEADS = {"semantic": SIFTFLOW_NUM_SEMANTIC, "geometric": SIFTFLOW_NUM_GEOMETRIC}
SIZE = (32, 48)
REAL_BASE = "fcn8s_resnet18"


class TinyBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.body = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return F.relu(self.body(F.relu(self.stem(x))))


class TinyFCN(nn.Module):
    """A stand-in FCN: a backbone, a class-dependent score layer, bilinear upsampling."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = TinyBackbone()
        self.score = nn.Conv2d(8, num_classes, 1)
        # The model contract (fcnseg.models.protocol.SegmentationModel).
        self.num_classes = num_classes
        self.normalization = "imagenet"
        self.in_channels = 3
        self.head_classes: dict[str, int] = {}

    def forward(self, x):
        score = self.score(self.backbone(x))
        return F.interpolate(score, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _images(channels: int = 3, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, channels, *SIZE, generator=torch.Generator().manual_seed(0))


def _real_model_available() -> bool:
    return REAL_BASE in list_models()


needs_real = pytest.mark.skipif(
    not _real_model_available(), reason=f"{REAL_BASE} is not registered in this checkout"
)


# --- Early fusion ---------------------------------------------------------------------------


def test_expand_input_channels_zero_rule_keeps_the_rgb_function():
    torch.manual_seed(0)
    model = TinyFCN(5).eval()
    rgb = _images()
    with torch.no_grad():
        before = model(rgb)
        expand_input_channels(model, 4, rule="zero")
        depth = torch.randn(2, 1, *SIZE)
        after = model(torch.cat([rgb, depth], 1))
    torch.testing.assert_close(after, before)
    assert model.in_channels == 4 and model.backbone.stem.in_channels == 4


def test_expand_input_channels_mean_rule_copies_the_mean_rgb_filter():
    torch.manual_seed(0)
    model = TinyFCN(5)
    old = model.backbone.stem.weight.detach().clone()
    expand_input_channels(model, 5, rule="mean")
    new = model.backbone.stem.weight
    assert new.shape == (8, 5, 3, 3)
    torch.testing.assert_close(new[:, :3], old)
    for extra in (3, 4):
        torch.testing.assert_close(new[:, extra], old.mean(dim=1))
    # An extra channel equal to the grey level adds what the mean filter sees in it.
    assert new.requires_grad


def test_expand_input_channels_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rule must be"):
        expand_input_channels(TinyFCN(2), 4, rule="random")
    with pytest.raises(ValueError, match="n_channels"):
        expand_input_channels(TinyFCN(2), 2)
    with pytest.raises(ValueError, match="no Conv2d"):
        find_first_conv(nn.Sequential(nn.Linear(3, 3)))


@needs_real
def test_early_fusion_registered_model_trains_on_rgbd():
    model = build_model("early_fusion", NYUD_NUM_CLASSES, base=REAL_BASE, pretrained=False)
    x = _images(4, batch=1)
    logits = model(x)
    assert logits.shape == (1, NYUD_NUM_CLASSES, *SIZE)
    target = torch.randint(0, NYUD_NUM_CLASSES, (1, *SIZE))
    PixelCrossEntropy()(logits, target).backward()
    name, conv = find_first_conv(model, in_channels=4)
    assert conv.weight.grad is not None and conv.weight.grad[:, 3].abs().sum() > 0
    assert model.normalization in ("imagenet", "tf_lite", "caffe_bgr")


# --- Late fusion ----------------------------------------------------------------------------


def test_late_fusion_sums_the_two_streams_and_accepts_dict_or_six_channels():
    torch.manual_seed(0)
    rgb_model, hha_model = TinyFCN(4), TinyFCN(4)
    fused = LateFusionFCN(rgb_model, hha_model)
    rgb, hha = _images(), _images() * 0.5 + 1
    expected = rgb_model(rgb) + hha_model(hha)
    torch.testing.assert_close(fused({"rgb": rgb, "hha": hha}), expected)
    torch.testing.assert_close(fused(torch.cat([rgb, hha], 1)), expected)
    fused(torch.cat([rgb, hha], 1)).sum().backward()
    assert rgb_model.score.weight.grad is not None and hha_model.score.weight.grad is not None


def test_late_fusion_rejects_wrong_inputs():
    fused = LateFusionFCN(TinyFCN(2), TinyFCN(2))
    with pytest.raises(ValueError, match="N x 6 x H x W"):
        fused(_images(4))
    with pytest.raises(ValueError, match="lacks"):
        fused({"rgb": _images()})


@needs_real
def test_late_fusion_registered_model_forward_loss_backward():
    model = build_model("late_fusion", NYUD_NUM_CLASSES, base=REAL_BASE, pretrained=False)
    x = _images(6, batch=1)
    logits = model(x)
    assert logits.shape == (1, NYUD_NUM_CLASSES, *SIZE)
    PixelCrossEntropy()(logits, torch.randint(0, NYUD_NUM_CLASSES, (1, *SIZE))).backward()
    assert all(p.grad is not None for p in model.hha.parameters() if p.requires_grad)


# --- Multi-head -----------------------------------------------------------------------------


def _tiny_multihead() -> MultiHeadFCN:
    torch.manual_seed(0)
    return MultiHeadFCN.from_builder(TinyFCN, HEADS)


def test_multihead_shares_the_trunk_and_runs_it_once():
    model = _tiny_multihead()
    assert model.shared == ["backbone"]
    trunk = model.trunk["backbone"]
    out = model(_images())
    assert set(out) == set(HEADS)
    assert out["semantic"].shape == (2, SIFTFLOW_NUM_SEMANTIC, *SIZE)
    assert out["geometric"].shape == (2, SIFTFLOW_NUM_GEOMETRIC, *SIZE)
    assert trunk.calls == 1
    # One trunk, two score layers: fewer parameters than two separate models.
    separate = sum(p.numel() for c in HEADS.values() for p in TinyFCN(c).parameters())
    assert sum(p.numel() for p in model.parameters()) < separate
    assert isinstance(model.heads["geometric"].backbone, SharedModuleRef)


def test_multihead_heads_equal_standalone_models_with_the_same_weights():
    model = _tiny_multihead().eval()
    x = _images()
    out = model(x)
    for name, classes in HEADS.items():
        standalone = TinyFCN(classes).eval()
        standalone.backbone.load_state_dict(model.trunk["backbone"].state_dict())
        standalone.score.load_state_dict(model.heads[name].score.state_dict())
        torch.testing.assert_close(out[name], standalone(x))


def test_multihead_state_dict_has_each_weight_once_and_round_trips():
    model = _tiny_multihead().eval()
    state = model.state_dict()
    assert not any(key.startswith("heads.semantic.backbone") for key in state)
    assert sum(key.startswith("trunk.backbone.") for key in state) == 4
    torch.manual_seed(1)
    other = MultiHeadFCN.from_builder(TinyFCN, HEADS).eval()
    other.load_state_dict(state)
    x = _images()
    for name in HEADS:
        torch.testing.assert_close(other(x)[name], model(x)[name])


def test_multihead_deepcopy_keeps_sharing_within_the_copy():
    model = _tiny_multihead()
    clone = copy.deepcopy(model)
    trunk = clone.trunk["backbone"]
    assert trunk is not model.trunk["backbone"]
    assert clone.heads["geometric"].backbone.target is trunk
    assert clone.heads["semantic"].backbone.target is trunk
    trunk.calls = 0
    clone(_images())
    assert trunk.calls == 1


def test_share_class_independent_modules_leaves_class_dependent_layers_apart():
    first, second = TinyFCN(3), TinyFCN(7)
    shared = share_class_independent_modules(first, second)
    assert shared == ["backbone"]
    assert second.backbone is first.backbone and second.score is not first.score


def test_multihead_rejects_bad_heads():
    with pytest.raises(ValueError, match="positive class count"):
        MultiHeadFCN.from_builder(TinyFCN, {"semantic": 0})
    with pytest.raises(ValueError, match="at least one"):
        MultiHeadFCN.from_builder(TinyFCN, {})


def test_multitask_loss_is_the_sum_of_the_head_losses():
    model = _tiny_multihead()
    out = model(_images())
    targets = {
        "semantic": torch.randint(0, SIFTFLOW_NUM_SEMANTIC, (2, *SIZE)),
        "geometric": torch.randint(0, SIFTFLOW_NUM_GEOMETRIC, (2, *SIZE)),
    }
    criterion = PixelCrossEntropy()
    total = multitask_loss(out, targets, criterion)
    expected = criterion(out["semantic"], targets["semantic"]) + criterion(
        out["geometric"], targets["geometric"]
    )
    torch.testing.assert_close(total, expected)
    weighted = multitask_loss(out, targets, {n: criterion for n in HEADS}, weights={"geometric": 0})
    torch.testing.assert_close(weighted, criterion(out["semantic"], targets["semantic"]))
    total.backward()
    assert model.trunk["backbone"].stem.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="do not match"):
        multitask_loss(out, {"semantic": targets["semantic"]}, criterion)


def test_multihead_confusion_scores_each_head_separately():
    semantic = torch.tensor([[[0, 1], [2, 2]]])
    geometric = torch.tensor([[[0, 0], [1, 2]]])
    confusion = MultiHeadConfusion(HEADS)
    # Perfect semantic logits; geometric predictions all wrong (shifted by one).
    semantic_logits = F.one_hot(semantic, SIFTFLOW_NUM_SEMANTIC).permute(0, 3, 1, 2).float()
    confusion.update(
        {"semantic": semantic_logits, "geometric": (geometric + 1) % 3},
        {"semantic": semantic, "geometric": geometric},
    )
    scores = confusion.scores()
    assert scores["semantic"].pixel_accuracy == 1.0 and scores["semantic"].mean_iu == 1.0
    assert scores["geometric"].pixel_accuracy == 0.0


@needs_real
def test_multihead_registered_model_forward_loss_backward():
    model = build_model(
        "multihead", SIFTFLOW_NUM_SEMANTIC, base=REAL_BASE, heads=HEADS, pretrained=False
    )
    assert "backbone" in model.shared
    out = model(_images(batch=1))
    targets = {name: torch.randint(0, c, (1, *SIZE)) for name, c in HEADS.items()}
    loss = multitask_loss(out, targets, PixelCrossEntropy())
    loss.backward()
    grads = [p.grad for p in model.trunk.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert model.head_classes == HEADS


class ChainFCN(nn.Module):
    """Like VGG's fc6 -> relu6 -> drop6 -> fc7: shared layers as separate top-level modules,
    in-place activations, dropout, and a head that modifies its input in place."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc6 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout2d(0.5)
        self.fc7 = nn.Conv2d(8, 8, 1)
        self.relu7 = nn.ReLU(inplace=True)
        self.score = nn.Conv2d(8, num_classes, 1)
        self.num_classes = num_classes
        self.normalization, self.in_channels, self.head_classes = "imagenet", 3, {}
        self.calls = 0
        self.fc7.register_forward_hook(self._count)

    def _count(self, *args):
        self.calls += 1

    def forward(self, x):
        h = self.relu7(self.fc7(self.drop6(self.relu6(self.fc6(x)))))
        h.mul_(2.0)  # an in-place op on the (shared) trunk output inside the head
        return self.score(h)


def test_multihead_runs_a_chain_of_shared_layers_once_despite_inplace_ops():
    torch.manual_seed(0)
    model = MultiHeadFCN.from_builder(ChainFCN, HEADS).train()
    assert model.shared == ["fc6", "relu6", "drop6", "fc7", "relu7"]
    trunk_fc7_owner = model.heads["semantic"]
    x = _images()
    out = model(x)
    assert trunk_fc7_owner.calls == 1
    sum(o.square().mean() for o in out.values()).backward()  # no in-place autograd error
    # One dropout mask for both heads: rescoring the semantic head's features with the
    # geometric score layer reproduces the geometric output.
    model.zero_grad()
    torch.manual_seed(3)
    out = model(x)
    torch.manual_seed(3)
    features = model.trunk["relu7"](
        model.trunk["fc7"](model.trunk["drop6"](model.trunk["relu6"](model.trunk["fc6"](x))))
    )
    expected = model.heads["geometric"].score(features * 2.0)
    torch.testing.assert_close(out["geometric"], expected)


@pytest.mark.skipif("fcn16s_vgg16" not in list_models(), reason="VGG paper nets not registered")
def test_multihead_on_the_paper_vgg_net_shares_through_fc7():
    model = build_model("multihead", 33, base="fcn16s_vgg16", heads=HEADS, width_divisor=16)
    assert {"fc6", "fc7"} <= set(model.shared)
    out = model(_images(batch=1))
    targets = {name: torch.randint(0, c, (1, *SIZE)) for name, c in HEADS.items()}
    multitask_loss(out, targets, PixelCrossEntropy()).backward()
    # The paper zero-initialises the score layers, so only "a gradient arrived" is checkable.
    assert all(p.grad is not None for p in model.trunk.parameters())
