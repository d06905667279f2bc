"""sliding_window_logits on its own: every head blended, the output shaped as the model's."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from fcnseg.inference.sliding import sliding_window_logits


class PointwiseHeads(nn.Module):
    """1x1 convolutions per head: any tiling must reproduce the whole-image logits."""

    def __init__(self, heads: dict[str, int]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Conv2d(3, c, 1) for name, c in heads.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {name: head(x) for name, head in self.heads.items()}


def _images() -> Tensor:
    return torch.randn(2, 3, 21, 34, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("tile_batch", [1, 3])
def test_every_head_is_blended_to_its_whole_image_logits(tile_batch: int) -> None:
    torch.manual_seed(0)
    model = PointwiseHeads({"geometric": 3, "semantic": 5}).eval()
    images = _images()
    with torch.no_grad():
        whole = model(images)
        tiled = sliding_window_logits(model, images, (16, 16), tile_batch=tile_batch)
    assert list(tiled) == ["geometric", "semantic"]
    for name in whole:
        torch.testing.assert_close(tiled[name], whole[name], atol=1e-5, rtol=1e-5)


def test_a_tensor_stays_a_tensor_and_a_one_head_dict_stays_a_dict() -> None:
    torch.manual_seed(0)
    heads = PointwiseHeads({"geometric": 3}).eval()
    images = _images()
    with torch.no_grad():
        as_dict = sliding_window_logits(heads, images, 16)
        as_tensor = sliding_window_logits(lambda x: heads(x)["geometric"], images, 16)
    assert isinstance(as_tensor, Tensor) and set(as_dict) == {"geometric"}
    assert torch.equal(as_dict["geometric"], as_tensor)


def test_strides_come_from_the_overlap_or_are_checked() -> None:
    model = PointwiseHeads({"semantic": 2}).eval()
    images = _images()
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_logits(model, images, 16, overlap=1.0)
    with pytest.raises(ValueError, match="larger than the tile"):
        sliding_window_logits(model, images, 16, tile_stride=17)
    with pytest.raises(ValueError, match="input size"):
        sliding_window_logits(lambda x: x[..., :-1], images, 16)
