"""SegNet, SegNet-Basic and their Bayesian (dropout) versions, layer for layer as released.

The release is alexgkendall/SegNet-Tutorial (commit bb68b64e72cb004b3ed927fee0f5624dd8097498):
`Models/segnet_train.prototxt`, `segnet_basic_train.prototxt`, `bayesian_segnet_train.prototxt`
and `bayesian_segnet_basic_train.prototxt`. Each net is held as the prototxt's list of layers,
under the prototxt's names and in its order (conv1_1, conv1_1_bn, relu1_1, ..., pool1, ...,
upsample5, conv5_3_D, ...), so that a caffemodel loads by layer name (models/caffe.py) and a test
can compare the layer list with the file. `forward` walks the list: a pooling layer records its
indices and the map it pooled, the matching "Upsample" layer puts values back at those indices
(models/unpool.py; the Caffe fork's Upsample has no parameters).

What differs from the release, and why:
- "BN" (caffe-segnet's layer: a scale and a shift of 1 x C x 1 x 1, batch statistics while
  training) is `nn.BatchNorm2d`, whose running statistics replace the release's separate pass
  (Scripts/compute_bn_statistics.py folds the training set's statistics into scale and shift).
  Parameters are the same two C-vectors; eps is PyTorch's (constants.SEGNET_RELEASE_BN_EPS).
- Encoder and decoder are two `nn.ModuleDict`s, `encoder` and `decoder` (the encoder's
  learning-rate multiplier applies to the first), the split falling after the last pooling.
- Any input size works: see models/unpool.py for the size rule, which is the release's at
  360 x 480.

Weights: random ("msra" filler as released) unless a release caffemodel is imported with
`fcnseg import-caffe`; no ImageNet VGG16-BN weights are installed offline.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from fcnseg.constants import (
    BAYESIAN_SEGNET_BN_SHIFT_INIT,
    BAYESIAN_SEGNET_DROPOUT,
    SEGNET_BASIC_CHANNELS,
    SEGNET_BASIC_DEPTH,
    SEGNET_BASIC_KERNEL,
    SEGNET_BASIC_LRN,
    SEGNET_BN_SHIFT_INIT,
    SEGNET_VGG16_BLOCKS,
)
from fcnseg.errors import ModelOptionError
from fcnseg.models.registry import register_model
from fcnseg.models.unpool import IndexedMaxPool, IndexedMaxUnpool
from fcnseg.models.weights import adapt_input_channels

Layers = list[tuple[str, nn.Module]]
#: (num_classes, bayesian, dropout, BN shift init) -> the encoder's and the decoder's layers.
LayerBuilder = Callable[[int, bool, float, float], tuple[Layers, Layers]]

#: The release's input: BGR on the 0-255 scale, nothing subtracted (its DenseImageData layer has
#: no transform_param; SegNet-Basic's LRN and the BN layers do the normalising).
SEGNET_NORMALIZATION = "caffe_bgr_raw"


def _conv(in_channels: int, out_channels: int, kernel: int) -> nn.Conv2d:
    """A same-size convolution with Caffe's "msra" filler (std sqrt(2 / fan_in)), zero bias."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


def _bn(channels: int, shift: float) -> nn.BatchNorm2d:
    """caffe-segnet's BN: scale filler 1, shift filler `shift` (0.001 SegNet, 0 Bayesian)."""
    bn = nn.BatchNorm2d(channels)
    nn.init.ones_(bn.weight)
    nn.init.constant_(bn.bias, shift)
    return bn


def _conv_bn(name: str, cin: int, cout: int, kernel: int, shift: float) -> Layers:
    """A convolution and its BN layer, named as the release names them (conv1_1, conv1_1_bn)."""
    return [(name, _conv(cin, cout, kernel)), (f"{name}_bn", _bn(cout, shift))]


def _relu() -> nn.ReLU:
    """In place, as Caffe's ReLU layers (top == bottom) are."""
    return nn.ReLU(inplace=True)


class SegNet(nn.Module):
    """An encoder-decoder that unpools with the encoder's max-pooling indices (a release net).

    Args:
        encoder: the encoder's layers as (release name, module), in prototxt order.
        decoder: the decoder's layers, likewise; its last layer scores the classes.
        num_classes: output classes (the classifier's out channels).
        normalization: the input preset the weights expect.
    """

    #: Logits move by a pixel where a pooling window nearly ties and two runtimes round
    #: differently: exports are checked by argmax agreement (export.verify_export).
    export_check = "argmax"

    def __init__(
        self, encoder: Layers, decoder: Layers, num_classes: int, normalization: str
    ) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict(dict(encoder))
        self.decoder = nn.ModuleDict(dict(decoder))
        self.num_classes = num_classes
        self.in_channels = 3
        self.normalization = normalization
        self.head_classes: dict[str, int] = {}

    def release_layers(self) -> list[str]:
        """Layer names in forward order: the prototxt's layers less data, loss and accuracy."""
        return [*self.encoder, *self.decoder]

    def forward(self, x: Tensor) -> Tensor:
        masks: dict[str, tuple[Tensor, Tensor]] = {}
        for layers in (self.encoder, self.decoder):
            for name, layer in layers.items():
                if isinstance(layer, IndexedMaxPool):
                    pooled = x
                    x, indices = layer(x)
                    masks[name] = (indices, pooled)
                elif isinstance(layer, IndexedMaxUnpool):
                    indices, pooled = masks[layer.pool]
                    x = layer(x, indices, pooled)
                else:
                    x = layer(x)
        return x


def _vgg16_layers(
    num_classes: int, bayesian: bool, dropout: float, shift: float
) -> tuple[Layers, Layers]:
    """Models/segnet_train.prototxt (bayesian: bayesian_segnet_train.prototxt) as layer lists."""
    encoder: Layers = []
    channels = 3
    for block, widths in enumerate(SEGNET_VGG16_BLOCKS, start=1):
        for index, width in enumerate(widths, start=1):
            encoder += _conv_bn(f"conv{block}_{index}", channels, width, 3, shift)
            encoder.append((f"relu{block}_{index}", _relu()))
            channels = width
        encoder.append((f"pool{block}", IndexedMaxPool()))
        if bayesian and block >= 3:
            encoder.append((f"encdrop{block}", nn.Dropout(dropout)))
    decoder: Layers = []
    blocks = list(enumerate(SEGNET_VGG16_BLOCKS, start=1))
    for block, widths in reversed(blocks):
        decoder.append((f"upsample{block}", IndexedMaxUnpool(f"pool{block}")))
        # The mirror of the block: its convolutions from last to first, convN_i_D giving back
        # convN_i's input width (conv4_1_D: 512 -> 256); conv1_1_D scores the classes.
        outputs = [SEGNET_VGG16_BLOCKS[block - 2][-1] if block > 1 else 0, *widths[:-1]]
        for index in range(len(widths), 0, -1):
            name = f"conv{block}_{index}_D"
            width = outputs[index - 1]
            if block == 1 and index == 1:
                decoder.append((name, _conv(channels, num_classes, 3)))
                break
            decoder += _conv_bn(name, channels, width, 3, shift)
            decoder.append((f"relu{block}_{index}_D", _relu()))
            channels = width
        if bayesian and block >= 3:
            decoder.append((f"decdrop{block}", nn.Dropout(dropout)))
    return encoder, decoder


def _basic_layers(
    num_classes: int, bayesian: bool, dropout: float, shift: float
) -> tuple[Layers, Layers]:
    """Models/segnet_basic_train.prototxt (bayesian: bayesian_segnet_basic_train.prototxt).

    The decoder's convolutions have BN but no ReLU, as released; Bayesian SegNet-Basic names
    its classifier `dense_softmax_inner_prod` where SegNet-Basic says `conv_classifier`.
    """
    size, alpha, beta, k = SEGNET_BASIC_LRN
    width, kernel = SEGNET_BASIC_CHANNELS, SEGNET_BASIC_KERNEL
    encoder: Layers = [("norm", nn.LocalResponseNorm(size, alpha, beta, k))]
    channels = 3
    for block in range(1, SEGNET_BASIC_DEPTH + 1):
        encoder += _conv_bn(f"conv{block}", channels, width, kernel, shift)
        encoder += [(f"relu{block}", _relu()), (f"pool{block}", IndexedMaxPool())]
        if bayesian and block >= 3:
            encoder.append((f"encdrop{block}", nn.Dropout(dropout)))
        channels = width
    decoder: Layers = []
    for block in range(SEGNET_BASIC_DEPTH, 0, -1):
        decoder.append((f"upsample{block}", IndexedMaxUnpool(f"pool{block}")))
        decoder += _conv_bn(f"conv_decode{block}", width, width, kernel, shift)
        if bayesian and block >= 3:
            decoder.append((f"decdrop{block}", nn.Dropout(dropout)))
    classifier = "dense_softmax_inner_prod" if bayesian else "conv_classifier"
    decoder.append((classifier, _conv(width, num_classes, 1)))
    return encoder, decoder


def _build(
    layers: LayerBuilder,
    num_classes: int,
    *,
    bayesian: bool,
    dropout: float,
    normalization: str,
    in_channels: int,
) -> SegNet:
    if not 0.0 <= dropout < 1.0:
        raise ModelOptionError(f"dropout={dropout!r} must be in [0, 1)")
    shift = BAYESIAN_SEGNET_BN_SHIFT_INIT if bayesian else SEGNET_BN_SHIFT_INIT
    encoder, decoder = layers(num_classes, bayesian, dropout, shift)
    model = SegNet(encoder, decoder, num_classes, normalization)
    if in_channels != 3:
        # models.weights states the rule; other band counts have no preset numbers.
        adapt_input_channels(model.encoder, in_channels)
        model.normalization = "per_channel"
        model.in_channels = in_channels
    return model


def _refuse_pretrained(pretrained: bool | str, name: str) -> None:
    """No ImageNet VGG16-BN weights are installed offline: True is an error, "auto" is random."""
    if pretrained and pretrained != "auto":
        raise ModelOptionError(
            f"{name} has no offline ImageNet weights; import a release caffemodel with `fcnseg "
            "import-caffe` and pass it as model.init, or use model.pretrained=false"
        )


def segnet_vgg16(
    num_classes: int,
    *,
    bayesian: bool = False,
    dropout: float = BAYESIAN_SEGNET_DROPOUT,
    pretrained: bool | str = False,
    normalization: str = SEGNET_NORMALIZATION,
    in_channels: int = 3,
) -> SegNet:
    """SegNet (VGG16 encoder with BN, mirrored decoder, unpooling by indices) as released.

    Args:
        bayesian: add the six dropout layers of Bayesian SegNet (encdrop3-5, decdrop5-3).
        dropout: their rate (released: 0.5); ignored without `bayesian`.
        pretrained: no offline encoder weights exist; see `_refuse_pretrained`.
        normalization: input preset; the release's raw BGR 0-255 by default.
        in_channels: image channels; conv1_1 is adapted by models.weights' rule.
    """
    _refuse_pretrained(pretrained, "segnet_vgg16")
    return _build(
        _vgg16_layers,
        num_classes,
        bayesian=bayesian,
        dropout=dropout,
        normalization=normalization,
        in_channels=in_channels,
    )


def segnet_basic(
    num_classes: int,
    *,
    bayesian: bool = False,
    dropout: float = BAYESIAN_SEGNET_DROPOUT,
    pretrained: bool | str = False,
    normalization: str = SEGNET_NORMALIZATION,
    in_channels: int = 3,
) -> SegNet:
    """SegNet-Basic (LRN input, 4 + 4 blocks of 7x7 convolutions, 64 channels) as released.

    Args: as `segnet_vgg16`; `bayesian` adds encdrop3-4 and decdrop4-3.
    """
    _refuse_pretrained(pretrained, "segnet_basic")
    return _build(
        _basic_layers,
        num_classes,
        bayesian=bayesian,
        dropout=dropout,
        normalization=normalization,
        in_channels=in_channels,
    )


def dropout_layers(model: nn.Module) -> list[str]:
    """Module paths of `model`'s dropout layers (Bayesian SegNet's Monte-Carlo sampling turns
    these, and only these, back on at test time)."""
    return [path for path, module in model.named_modules() if isinstance(module, nn.Dropout)]


_SOURCE = "SegNet-Tutorial Models/"
register_model(
    "segnet_vgg16",
    description="SegNet: VGG16-BN encoder, decoder unpooling by pooling indices "
    f"({_SOURCE}segnet_train.prototxt)",
    family="segnet",
    release_solver="camvid-segnet",
)(segnet_vgg16)
register_model(
    "segnet_basic",
    description=f"SegNet-Basic: LRN, 4+4 blocks of 7x7 convs, 64 ch ({_SOURCE}segnet_basic_train)",
    family="segnet",
    release_solver="camvid-segnet-basic",
)(segnet_basic)
register_model(
    "bayesian_segnet_vgg16",
    description="Bayesian SegNet: SegNet with dropout 0.5 around the three deepest blocks",
    family="segnet",
    release_solver="camvid-bayesian-segnet",
    bayesian=True,
)(segnet_vgg16)
register_model(
    "bayesian_segnet_basic",
    description="Bayesian SegNet-Basic: SegNet-Basic with dropout 0.5 around blocks 3 and 4",
    family="segnet",
    release_solver="camvid-bayesian-segnet-basic",
    bayesian=True,
)(segnet_basic)

__all__ = ["SegNet", "dropout_layers", "segnet_basic", "segnet_vgg16"]
