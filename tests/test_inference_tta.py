"""multiscale_flip_probs on its own: each head averaged over scales and flips, shape kept."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcnseg.inference.tta import multiscale_flip_probs


class ContextHeads(nn.Module):
    """Two heads with a 3x3 context, so flips and scales change the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.semantic = nn.Conv2d(3, 4, 3, padding=1)
        self.geometric = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"semantic": self.semantic(x), "geometric": self.geometric(x)}


def _manual_mean(logits_of, images: Tensor) -> Tensor:
    height, width = images.shape[-2:]
    total = torch.zeros(())
    for scale in (0.5, 1.0):
        size = (round(height * scale), round(width * scale))
        scaled = F.interpolate(images, size=size, mode="bilinear") if scale != 1.0 else images
        for flipped in (False, True):
            probs = torch.softmax(logits_of(scaled.flip(-1) if flipped else scaled), dim=1)
            probs = probs.flip(-1) if flipped else probs
            total = total + F.interpolate(probs, size=(height, width), mode="bilinear")
    return total / 4


def test_each_head_is_the_mean_of_its_own_probabilities() -> None:
    torch.manual_seed(0)
    model = ContextHeads().eval()
    images = torch.randn(1, 3, 12, 18)
    with torch.no_grad():
        out = multiscale_flip_probs(model, images, scales=(0.5, 1.0))
        for name in ("semantic", "geometric"):
            expected = _manual_mean(lambda x, name=name: model(x)[name], images)
            torch.testing.assert_close(out[name], expected)


def test_a_tensor_stays_a_tensor_and_a_one_head_dict_stays_a_dict() -> None:
    torch.manual_seed(0)
    model = ContextHeads().eval()
    images = torch.randn(1, 3, 12, 18)
    with torch.no_grad():
        as_tensor = multiscale_flip_probs(lambda x: model(x)["geometric"], images, (1.0,))
        as_dict = multiscale_flip_probs(lambda x: {"geometric": model(x)["geometric"]}, images)
    assert isinstance(as_tensor, Tensor) and set(as_dict) == {"geometric"}
    assert as_dict["geometric"].shape == (1, 2, 12, 18)
