"""The SegNet release's batch-norm statistics pass (engine/bn_statistics.py): the averages it
leaves, what it restores, and `train.bn_statistics=recompute` in the training loop."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fcnseg.engine.bn_statistics import batch_norm_layers, recompute_bn_statistics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engine_train import tiny_config, tiny_datasets  # noqa: E402


class DropoutThenBN(nn.Module):
    """conv -> dropout -> BN: the statistics must be those of the dropout-free (TEST) net."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout2d(0.5)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)
        self.in_channels = 3
        self.normalization = "imagenet"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.drop(self.conv(images))))


def test_running_stats_become_the_average_of_the_batches_statistics():
    torch.manual_seed(0)
    model = DropoutThenBN().train()
    batches = [torch.randn(3, 3, 8, 8) * (i + 1) + i for i in range(4)]
    with torch.no_grad():
        features = [model.conv(batch) for batch in batches]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)
    # Each batch's variance Bessel-corrected (n - 1), then averaged: the release's estimate.
    variances = torch.stack([f.transpose(0, 1).flatten(1).var(1) for f in features]).mean(0)
    model.bn.momentum = 0.3
    rng_before = torch.get_rng_state()

    used = recompute_bn_statistics(model, iter(batches))

    assert used == 4
    torch.testing.assert_close(model.bn.running_mean, means, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.bn.running_var, variances, rtol=1e-5, atol=1e-5)
    assert model.training and model.bn.momentum == 0.3  # mode and momentum restored
    assert torch.equal(torch.get_rng_state(), rng_before)  # a resume sees the same streams


def test_no_batches_is_refused_and_a_net_without_bn_is_left_alone():
    with pytest.raises(ValueError, match="no batches"):
        recompute_bn_statistics(DropoutThenBN(), iter([]))
    plain = nn.Conv2d(3, 2, 1)
    assert recompute_bn_statistics(plain, iter([torch.zeros(1, 3, 4, 4)])) == 0


class TinyBNNet(nn.Module):
    normalization = "imagenet"
    in_channels = 3

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes  # the model contract train() checks
        self.head_classes: dict[str, int] = {}
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))


def _train(tmp_path: Path, **overrides) -> TinyBNNet:
    from fcnseg.engine.train import train

    torch.manual_seed(0)
    train_set, val_set = tiny_datasets()
    model = TinyBNNet(train_set.num_classes)
    config = tiny_config(**{"epochs": 2, "val_every": 1, **overrides})
    train(config, out=tmp_path, model=model, train_set=train_set, val_set=val_set)
    return model


def test_training_with_recompute_validates_on_the_training_sets_averages(tmp_path, monkeypatch):
    import fcnseg.engine.bn_statistics as bn_statistics

    calls: list[tuple[int, torch.Tensor]] = []

    def spy(model, images, device="cpu"):
        batches = list(images)
        used = recompute_bn_statistics(model, iter(batches), device)
        calls.append((sum(len(batch) for batch in batches), model.body[1].running_mean.clone()))
        return used

    monkeypatch.setattr(bn_statistics, "recompute_bn_statistics", spy)
    model = _train(tmp_path / "a", bn_statistics="recompute", bn_statistics_batches=3)
    # Once before each of the two validations, over 3 batches of 2 of the 8 training images.
    assert [images for images, _ in calls] == [6, 6]
    torch.testing.assert_close(model.body[1].running_mean, calls[-1][1])
    calls.clear()
    running = _train(tmp_path / "b", bn_statistics="running")
    assert calls == []
    assert not torch.allclose(running.body[1].running_mean, model.body[1].running_mean, atol=1e-4)


def test_bn_statistics_batches_must_be_positive():
    from fcnseg.errors import RecipeError

    with pytest.raises(RecipeError, match="train.bn_statistics_batches"):
        tiny_config(bn_statistics="recompute", bn_statistics_batches=0)
    assert len(batch_norm_layers(TinyBNNet(3))) == 1
