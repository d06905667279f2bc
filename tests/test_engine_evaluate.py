"""Evaluation scores every head of a multi-head model against its own label map."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from fcnseg.engine.evaluate import evaluate, evaluate_heads


class TwoHeads(nn.Module):
    """Semantic head copies the label map it is given; geometric head always predicts class 0."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        semantic = nn.functional.one_hot(x[:, 0].long(), 4).permute(0, 3, 1, 2).float()
        geometric = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        geometric[:, 0] = 1.0
        return {"semantic": semantic, "geometric": geometric}


def _loader() -> DataLoader:
    semantic = torch.tensor([[0, 1], [2, 3]])
    geometric = torch.tensor([[0, 0], [1, 2]])
    image = semantic[None].repeat(3, 1, 1).float()
    sample = (image, {"semantic": semantic, "geometric": geometric})
    return DataLoader([sample, sample], batch_size=2)


def test_every_head_is_scored_on_its_own_labels() -> None:
    per_head = evaluate_heads(TwoHeads(), _loader(), num_classes=4, ignore_index=255)
    assert set(per_head) == {"semantic", "geometric"}
    assert per_head["semantic"].mean_iu == pytest.approx(1.0)
    assert per_head["geometric"].pixel_accuracy == pytest.approx(0.5)
    assert len(per_head["geometric"].per_class_iu) == 3
    # the primary score used for model selection is the semantic head's
    assert evaluate(TwoHeads(), _loader(), 4, 255).mean_iu == pytest.approx(1.0)


def test_single_head_model_scores_under_the_primary_name() -> None:
    model = nn.Conv2d(3, 2, 1)
    loader = DataLoader(
        [(torch.zeros(3, 2, 2), torch.zeros(2, 2, dtype=torch.int64))], batch_size=1
    )
    per_head = evaluate_heads(model, loader, num_classes=2, ignore_index=255)
    assert list(per_head) == ["semantic"]
