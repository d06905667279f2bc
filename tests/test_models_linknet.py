"""LinkNet's decoder: the paper's block table on ResNet-18 and any encoder (its ONNX export is
checked with the other real models in tests/test_export.py).

Sources: Chaurasia & Culurciello, "LinkNet", arXiv:1707.03718 (Fig. 3: decoder block 1x1 m ->
m/4, 3x3 full-conv stride 2, 1x1 m/4 -> n; Table 1 of blocks (m, n): (64, 64), (128, 64),
(256, 128), (512, 256); final block 3x3 full-conv 64 -> 32, 3x3 conv 32, 2x2 full-conv 32 ->
classes; 11.5 M parameters) and e-lab/pytorch-linknet models/linknet.py at
1f27384cab08eca2517be9be4e2ffc880777c464 (`Decoder(64, 64, 3, 1, 1, 0)`: the finest block has
stride 1; biases off in the decoder blocks, on in the final block).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg.constants import LINKNET_PAPER_PARAMETERS_M
from fcnseg.errors import ModelOptionError
from fcnseg.models import build_model
from fcnseg.models.heads.linknet import LinkNetHead


def _widths(block: nn.Sequential) -> list[tuple[int, int, int]]:
    """(in, out, stride) of the three convolutions of a decoder block."""
    convs = [m for m in block if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    return [(c.in_channels, c.out_channels, c.stride[0]) for c in convs]


def test_linknet_resnet18_is_the_papers_table():
    with torch.device("meta"):
        model = build_model("linknet_resnet18", 11, pretrained=False)
    head = model.head
    assert isinstance(head, LinkNetHead)
    assert _widths(head.decoders["s32"]) == [(512, 128, 1), (128, 128, 2), (128, 256, 1)]
    assert _widths(head.decoders["s16"]) == [(256, 64, 1), (64, 64, 2), (64, 128, 1)]
    assert _widths(head.decoders["s8"]) == [(128, 32, 1), (32, 32, 2), (32, 64, 1)]
    assert _widths(head.decoders["s4"]) == [(64, 16, 1), (16, 16, 1), (16, 64, 1)]
    transposed = head.decoders["s32"][3]
    assert isinstance(transposed, nn.ConvTranspose2d) and transposed.kernel_size == (3, 3)
    final = [m for m in head.final if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [
        (type(m), m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in final
    ] == [
        (nn.ConvTranspose2d, 64, 32, 3, 2),
        (nn.Conv2d, 32, 32, 3, 1),
    ]
    score = head.score
    assert isinstance(score, nn.ConvTranspose2d)
    assert (score.in_channels, score.out_channels, score.kernel_size, score.stride) == (
        32,
        11,
        (2, 2),
        (2, 2),
    )
    parameters = sum(p.numel() for p in model.parameters())
    # 11,534,667 for 11 classes: the paper's 11.5 M (ResNet-18 trunk 11.18 M + decoder 0.35 M).
    assert round(parameters / 1e6, 1) == LINKNET_PAPER_PARAMETERS_M


@pytest.mark.parametrize("name", ["linknet_resnet18", "linknet_efficientnet_lite0"])
def test_any_input_size_comes_back_at_its_size(name):
    model = build_model(name, 4, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 67)).shape == (1, 4, 45, 67)


def test_an_atrous_encoder_is_refused_in_one_line():
    with pytest.raises(ModelOptionError, match="linknet needs an encoder at output stride 32"):
        build_model("linknet_resnet18", 3, pretrained=False, output_stride=8)
