"""Read the authors' Caffe `.caffemodel` files and load them into fcnseg's paper nets by layer name.

Why: the FCN release (fcn.berkeleyvision.org) distributes trained nets as Caffe binaries, and
researchers reproducing the paper want those exact weights. fcnseg's paper nets (models/fcn.py)
keep the release's layer names (conv1_1 ... fc7, score_fr, score_pool4, upscore2, ...), so a
caffemodel maps onto them by name with no hand-written table.

The file is a protobuf `NetParameter`; Caffe itself is not needed. Only the few fields that carry
weights are decoded (field numbers from caffe.proto, the format's public definition):

- NetParameter: `layer` = 100 (LayerParameter, current format), `layers` = 2 (V1LayerParameter).
- LayerParameter: `name` = 1, `type` = 2 (string), `blobs` = 7.
- V1LayerParameter: `name` = 4, `blobs` = 6.
- BlobProto: legacy `num`, `channels`, `height`, `width` = 1-4, `data` = 5 (float, packed or
  not), `shape` = 7 (BlobShape: `dim` = 1, int64), `double_data` = 8.

Blob 0 of a layer is its weight, blob 1 its bias. Caffe's convolution and deconvolution weights
have PyTorch's layout already (out x in/group x kh x kw; deconvolution in x out x kh x kw). An
InnerProduct weight is reshaped to the convolution it becomes when the element counts agree:
that is the paper's "convolutionalization" of fc6/fc7 (section 3.1), which lets the ILSVRC
VGG16 caffemodel initialise an FCN's encoder and fc layers. Legacy blobs (num, channels,
height, width) are right-aligned, as Caffe's Blob::ShapeEquals reads them: a bias is
1 x 1 x 1 x N and an InnerProduct weight 1 x 1 x M x N, so leading 1-axes carry no meaning.
Caffe nets expect BGR images in [0, 255] minus the mean pixel: build the net with
`normalization="caffe_bgr"` (SegNet's: "caffe_bgr_raw"). SegNet's "BN" layers load into
BatchNorm by models/caffe_bn.py's rule; its "Upsample" layers have no blobs.

Layer names. fcnseg's paper nets use the release's names, but the composite release nets add
stream suffixes (SIFT Flow's `score_fr_sem` / `score_fr_geo`, NYUD's `conv1_1color` /
`conv1_1hha`) or rename a layer (`conv1_1_bgrd` of the RGB-D net). `release_layer_names` maps an
fcnseg module path to the release name(s) with the two tables below, the only place these
differences are written down; `RELEASE_NETS` says which fcnseg model (and options) each released
net becomes, so `fcnseg import-caffe --release NET` needs nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnseg.errors import WeightsError
from fcnseg.models.caffe_bn import bn_updates, is_batch_norm

# Protobuf wire types (protobuf encoding specification).
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# caffe.proto field numbers (see module docstring).
_NET_LAYER, _NET_V1_LAYERS = 100, 2
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
_V1_NAME, _V1_BLOBS = 4, 6
_BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
_SHAPE_DIM = 1


class CaffeModelError(WeightsError):
    """A caffemodel that cannot be read, or that does not fit the net it is loaded into."""


#: fcnseg stream (a component of a module path) -> the suffix the release appends to the names
#: of that stream's layers: SIFT Flow's two heads (siftflow-fcn*/net.py: score_fr_sem,
#: upscore2_geo, ...) and NYUD's two late-fusion streams (nyud-fcn32s-color-hha/net.py:
#: `modality_fcn(n, 'color', 'color')` names conv1_1color ... score_frcolor).
RELEASE_STREAM_SUFFIXES: dict[str, str] = {
    "semantic": "_sem",
    "geometric": "_geo",
    "rgb": "color",
    "hha": "hha",
}
#: fcnseg layer name -> other names the release gives it. nyud-fcn32s-color-d's 4-channel first
#: convolution is `conv1_1_bgrd`; nyud-fcn32s-color-hha upsamples the fused score once, with one
#: unsuffixed `upscore` that both fcnseg streams take (frozen bilinear kernels, so summing
#: before or after upsampling is the same).
RELEASE_ALIASES: dict[str, tuple[str, ...]] = {
    "conv1_1": ("conv1_1_bgrd",),
    "conv_classifier": ("dense_softmax_inner_prod",),  # SegNet-Basic's, Bayesian and zoo nets
    "dense_softmax_inner_prod": ("conv_classifier",),
}
#: Layers a suffixed stream also looks up without its suffix (see RELEASE_ALIASES).
RELEASE_UNSUFFIXED: frozenset[str] = frozenset({"upscore"})
#: Module-path components fcnseg adds that release names never have.
_CONTAINERS: frozenset[str] = frozenset({"encoder", "trunk", "heads"})


@dataclass(frozen=True)
class ReleaseNet:
    """What one released net becomes in fcnseg: model name, builder options, classes, data.

    `leading_classes` are output classes the release trains before the dataset format's own
    (PASCAL-Context: the release scores 60 classes, label 0 "everything else" included, where
    fcnseg's `context` format keeps 59 and treats 0 as void).
    """

    model: str
    num_classes: int
    data_format: str
    options: dict[str, Any] = field(default_factory=dict)
    leading_classes: tuple[str, ...] = ()


_SIFTFLOW_HEADS = {"semantic": 33, "geometric": 3}
_RAW_BGR = {"normalization": "caffe_bgr_raw"}  # SegNet-Tutorial's nets (models/segnet.py)
#: Every net of the release (folder name) -> the fcnseg model it loads into, by layer name.
RELEASE_NETS: dict[str, ReleaseNet] = {
    "voc-fcn32s": ReleaseNet("fcn32s_vgg16", 21, "voc"),
    "voc-fcn16s": ReleaseNet("fcn16s_vgg16", 21, "voc"),
    "voc-fcn8s": ReleaseNet("fcn8s_vgg16", 21, "voc"),
    "voc-fcn8s-atonce": ReleaseNet("fcn8s_atonce_vgg16", 21, "voc"),
    "voc-fcn-alexnet": ReleaseNet("fcn32s_caffenet", 21, "voc"),
    **{
        f"pascalcontext-{variant}": ReleaseNet(
            f"{variant}_vgg16", 60, "context", leading_classes=("everything else",)
        )
        for variant in ("fcn32s", "fcn16s", "fcn8s")
    },
    **{
        f"siftflow-{variant}": ReleaseNet(
            "multihead", 33, "siftflow", {"base": f"{variant}_vgg16", "heads": _SIFTFLOW_HEADS}
        )
        for variant in ("fcn32s", "fcn16s", "fcn8s")
    },
    "nyud-fcn32s-color": ReleaseNet("fcn32s_vgg16", 40, "nyud"),
    "nyud-fcn32s-hha": ReleaseNet("fcn32s_vgg16", 40, "nyud"),
    "nyud-fcn32s-color-hha": ReleaseNet(
        "late_fusion", 40, "nyud", {"base": "fcn32s_vgg16", "stream_weights": [0.5, 0.5]}
    ),
    "camvid-segnet": ReleaseNet("segnet_vgg16", 11, "camvid", _RAW_BGR),
    "camvid-segnet-basic": ReleaseNet("segnet_basic", 11, "camvid", _RAW_BGR),
    "camvid-bayesian-segnet": ReleaseNet("bayesian_segnet_vgg16", 11, "camvid", _RAW_BGR),
    "camvid-bayesian-segnet-basic": ReleaseNet("bayesian_segnet_basic", 11, "camvid", _RAW_BGR),
    "nyud-fcn32s-color-d": ReleaseNet(
        "early_fusion", 40, "nyud", {"base": "fcn32s_vgg16", "in_channels": 4, "rule": "mean"}
    ),
    # DeepLab's VGG16 releases (models/deeplab.py; constants.py names the prototxts): layer names
    # conv1_1 ... fc8_voc12 (LargeFOV) and fc6_1 ... fc8_voc12_4 (ASPP) are fcnseg's own.
    "deeplab-largefov": ReleaseNet("deeplab_largefov_vgg16", 21, "voc"),
    "deeplab-aspp-vgg16": ReleaseNet("deeplab_aspp_vgg16", 21, "voc"),
}


def release_net(name: str) -> ReleaseNet:
    """The entry of `name`, or a one-line error listing the release's nets."""
    if name not in RELEASE_NETS:
        raise CaffeModelError(
            f"unknown release net {name!r}; choose one of: {', '.join(RELEASE_NETS)}"
        )
    return RELEASE_NETS[name]


def release_layer_names(module_path: str) -> tuple[str, ...]:
    """Release layer names an fcnseg module may be stored under, preferred first.

    "encoder.conv1_1" -> ("conv1_1", "conv1_1_bgrd"); "heads.semantic.score_fr" ->
    ("score_fr_sem",); "hha.upscore" -> ("upscorehha", "upscore").
    """
    parts = module_path.split(".")
    layer = parts[-1]
    suffix = "".join(RELEASE_STREAM_SUFFIXES.get(part, "") for part in parts[:-1])
    unknown = [p for p in parts[:-1] if p not in _CONTAINERS and p not in RELEASE_STREAM_SUFFIXES]
    if unknown:  # a module nested in some other way: the bare layer name is the best guess
        suffix = ""
    names = [layer + suffix, *(alias + suffix for alias in RELEASE_ALIASES.get(layer, ()))]
    if suffix and layer in RELEASE_UNSUFFIXED:
        names.append(layer)
    return tuple(dict.fromkeys(names))


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= len(buffer):
            raise CaffeModelError("truncated varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise CaffeModelError("varint longer than 64 bits")


def _fields(buffer: memoryview):
    """(field number, wire type, value) of one message; length-delimited values as memoryviews."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, position = _varint(buffer, position)
        elif wire == _LENGTH:
            length, position = _varint(buffer, position)
            if position + length > len(buffer):
                raise CaffeModelError(f"field {number} runs past the end of its message")
            value = buffer[position : position + length]
            position += length
        elif wire == _FIXED32:
            value = buffer[position : position + 4]
            position += 4
        elif wire == _FIXED64:
            value = buffer[position : position + 8]
            position += 8
        else:
            raise CaffeModelError(f"unsupported protobuf wire type {wire} (field {number})")
        if position > len(buffer):
            raise CaffeModelError("message truncated")
        yield number, wire, value


def _packed_varints(value: memoryview) -> list[int]:
    numbers, position = [], 0
    while position < len(value):
        number, position = _varint(value, position)
        numbers.append(number)
    return numbers


def _read_blob(buffer: memoryview) -> np.ndarray:
    legacy: dict[int, int] = {}
    shape: list[int] | None = None
    chunks: list[np.ndarray] = []
    for number, wire, value in _fields(buffer):
        if number == _BLOB_DATA and wire == _LENGTH:
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif number == _BLOB_DATA and wire == _FIXED32:
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif number == _BLOB_DOUBLE_DATA and wire in (_LENGTH, _FIXED64):
            chunks.append(np.frombuffer(value, dtype="<f8").astype(np.float32))
        elif number == _BLOB_SHAPE and wire == _LENGTH:
            shape = []
            for dim_number, dim_wire, dim_value in _fields(value):
                if dim_number == _SHAPE_DIM:
                    shape += _packed_varints(dim_value) if dim_wire == _LENGTH else [int(dim_value)]
        elif number in _BLOB_LEGACY_DIMS and wire == _VARINT:
            legacy[number] = int(value)
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if shape is None:
        shape = [legacy.get(number, 1) for number in _BLOB_LEGACY_DIMS] if legacy else [data.size]
    if int(np.prod(shape)) != data.size:
        raise CaffeModelError(f"blob of shape {shape} holds {data.size} values")
    return data.reshape(shape).copy()


@dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, type (empty for the V1 format) and weight blobs."""

    name: str
    type: str = ""
    blobs: list[np.ndarray] = field(default_factory=list)


def read_caffemodel(path: str | Path) -> dict[str, CaffeLayer]:
    """The layers with weights of a `.caffemodel` (current or V1 format), by name, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: caffemodel not found; check the path")
    buffer = memoryview(path.read_bytes())
    layers: dict[str, CaffeLayer] = {}
    try:
        for number, wire, value in _fields(buffer):
            if wire != _LENGTH or number not in (_NET_LAYER, _NET_V1_LAYERS):
                continue
            name_field, blobs_field = (
                (_LAYER_NAME, _LAYER_BLOBS) if number == _NET_LAYER else (_V1_NAME, _V1_BLOBS)
            )
            layer = CaffeLayer(name="")
            for sub_number, sub_wire, sub_value in _fields(value):
                if sub_wire != _LENGTH:
                    continue
                if sub_number == name_field:
                    layer.name = bytes(sub_value).decode("utf-8")
                elif number == _NET_LAYER and sub_number == _LAYER_TYPE:
                    layer.type = bytes(sub_value).decode("utf-8")
                elif sub_number == blobs_field:
                    layer.blobs.append(_read_blob(sub_value))
            if layer.blobs:
                layers[layer.name] = layer
    except (CaffeModelError, UnicodeDecodeError, struct.error) as error:
        raise CaffeModelError(f"{path}: not a readable caffemodel ({error})") from None
    if not layers:
        raise CaffeModelError(
            f"{path}: no layers with weights; is it a .caffemodel (not a prototxt)?"
        )
    return layers


def _strip_leading_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    index = 0
    while index < len(shape) - 1 and shape[index] == 1:
        index += 1
    return shape[index:]


def blob_fits(blob_shape: tuple[int, ...], tensor_shape: tuple[int, ...]) -> bool:
    """Whether a blob of `blob_shape` holds a tensor of `tensor_shape`, as Caffe would read it.

    Equal up to leading 1-axes (legacy right-aligned 4-D blobs, 1 x 1 x 1 x N biases), or an
    InnerProduct weight M x N (2-D, or legacy 1 x 1 x M x N) for a convolution M x C x k x k
    with C k k = N: fc6/fc7 convolutionalized (paper section 3.1).
    """
    blob, tensor = _strip_leading_ones(blob_shape), _strip_leading_ones(tensor_shape)
    if blob == tensor:
        return True
    return (
        len(blob) == 2
        and len(tensor_shape) > 2
        and blob[0] == tensor_shape[0]
        and blob[1] == int(np.prod(tensor_shape[1:]))
    )


def _weighted_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (path, module)
        for path, module in model.named_modules()
        if path and isinstance(getattr(module, "weight", None), torch.Tensor)
    ]


def expected_layer_names(model: nn.Module) -> list[str]:
    """The release layer names `model`'s weighted modules are looked up by (first choices)."""
    return [release_layer_names(path)[0] for path, _ in _weighted_modules(model)]


def _layer_updates(
    module_path: str, module: nn.Module, layer: CaffeLayer, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """State-dict entries of `module` from `layer`'s blobs (0: weight, 1: bias; SegNet's BN by
    models/caffe_bn.py); a WeightsError naming the layer when they do not fit."""
    name, blobs = layer.name, layer.blobs
    if is_batch_norm(module):
        return bn_updates(module_path, module, name, layer.type, blobs)
    targets = [("weight", module.weight)]
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        targets.append(("bias", bias))
    if len(blobs) < len(targets):
        raise WeightsError(
            f"layer {name} has {len(blobs)} blob(s), {module_path} needs {len(targets)}"
        )
    updates: dict[str, torch.Tensor] = {}
    for (kind, tensor), blob in zip(targets, blobs, strict=False):
        if blob.size != tensor.numel() or not blob_fits(blob.shape, tuple(tensor.shape)):
            raise WeightsError(
                f"layer {name} {kind} has shape {list(blob.shape)}, {module_path} needs "
                f"{list(tensor.shape)}; build the net that matches the caffemodel (variant, "
                "number of classes)"
            )
        key = f"{module_path}.{kind}"
        updates[key] = torch.from_numpy(blob.reshape(tuple(tensor.shape))).to(state[key].dtype)
    return updates


def load_caffemodel(
    model: nn.Module, path: str | Path, strict: bool = True
) -> tuple[list[str], list[str]]:
    """Copy a caffemodel's weights into `model` by layer name; returns (loaded, unused) layer names.

    Every module with a `weight` (and `bias`) parameter is looked up under the release names of
    its path (`release_layer_names`: the last component, plus the stream suffixes and aliases of
    the composite release nets). `strict=True` requires every such module to be found (the
    trained FCN releases); `strict=False` leaves the missing ones as they are (e.g. the ILSVRC
    VGG16 caffemodel, which has no score layers). When layers are missing the one-line error
    lists the names it expected and those the file has, so a net/caffemodel mismatch is read off
    the message. A shape that does not fit is always an error naming the layer.
    """
    layers = read_caffemodel(path)
    loaded: list[str] = []
    missing: list[str] = []
    updates: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    for module_path, module in _weighted_modules(model):
        candidates = release_layer_names(module_path)
        name = next((candidate for candidate in candidates if candidate in layers), None)
        if name is None:
            missing.append(candidates[0])
            continue
        try:
            updates.update(_layer_updates(module_path, module, layers[name], state))
        except WeightsError as error:
            raise CaffeModelError(f"{path}: {error}") from None
        loaded.append(name)
    if strict and missing:
        raise CaffeModelError(
            f"{path}: layer(s) {', '.join(missing)} not found for this net; expected "
            f"{', '.join(expected_layer_names(model))}; the caffemodel has "
            f"{', '.join(layers)}; pick the matching model (--release NET) or load with "
            "strict=False (--partial) to keep their initialisation"
        )
    model.load_state_dict(updates, strict=False)
    used = set(loaded)
    unused = [name for name in layers if name not in used]
    return list(dict.fromkeys(loaded)), unused
