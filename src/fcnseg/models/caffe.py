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
have PyTorch's layout already (out x in x kh x kw; deconvolution in x out x kh x kw). An
InnerProduct weight is reshaped to the convolution it becomes when the element counts agree:
that is the paper's "convolutionalization" of fc6/fc7 (section 3.1), which lets the ILSVRC
VGG16 caffemodel initialise an FCN's encoder and fc layers. Caffe nets expect BGR images in
[0, 255] minus the mean pixel: build the net with `normalization="caffe_bgr"`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Protobuf wire types (protobuf encoding specification).
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# caffe.proto field numbers (see module docstring).
_NET_LAYER, _NET_V1_LAYERS = 100, 2
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
_V1_NAME, _V1_BLOBS = 4, 6
_BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
_SHAPE_DIM = 1


class CaffeModelError(ValueError):
    """A caffemodel that cannot be read, or that does not fit the net it is loaded into."""


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


def _caffe_name(module_path: str) -> str:
    """fcnseg module path -> Caffe layer name: the last component ("encoder.conv1_1" -> "conv1_1")."""
    return module_path.rsplit(".", 1)[-1]


def load_caffemodel(
    model: nn.Module, path: str | Path, strict: bool = True
) -> tuple[list[str], list[str]]:
    """Copy a caffemodel's weights into `model` by layer name; returns (loaded, unused) layer names.

    Every module with a `weight` (and `bias`) parameter is looked up by the last component of its
    path. `strict=True` requires every such module to be found (the trained FCN releases);
    `strict=False` leaves the missing ones as they are (e.g. the ILSVRC VGG16 caffemodel, which
    has no score layers). A shape that does not fit is always an error naming the layer.
    """
    layers = read_caffemodel(path)
    loaded: list[str] = []
    missing: list[str] = []
    updates: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    for module_path, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or not module_path:
            continue
        name = _caffe_name(module_path)
        if name not in layers:
            missing.append(name)
            continue
        blobs = layers[name].blobs
        targets = [("weight", weight)]
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            targets.append(("bias", bias))
        if len(blobs) < len(targets):
            raise CaffeModelError(
                f"{path}: layer {name} has {len(blobs)} blob(s), {module_path} needs {len(targets)}"
            )
        for (kind, tensor), blob in zip(targets, blobs, strict=False):
            if blob.size != tensor.numel() or (
                blob.ndim == tensor.dim() and blob.shape != tuple(tensor.shape)
            ):
                raise CaffeModelError(
                    f"{path}: layer {name} {kind} has shape {list(blob.shape)}, {module_path} "
                    f"needs {list(tensor.shape)}; build the net that matches the caffemodel "
                    "(variant, number of classes)"
                )
            key = f"{module_path}.{kind}"
            updates[key] = torch.from_numpy(blob.reshape(tuple(tensor.shape))).to(state[key].dtype)
        loaded.append(name)
    if strict and missing:
        raise CaffeModelError(
            f"{path}: no layer(s) {', '.join(missing)} for this net; pick the matching model or "
            "load with strict=False (--partial) to keep their initialisation"
        )
    model.load_state_dict(updates, strict=False)
    unused = [name for name in layers if name not in loaded]
    return loaded, unused
