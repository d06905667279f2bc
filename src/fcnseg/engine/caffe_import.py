"""`fcnseg import-caffe` as a function: a Caffe `.caffemodel` of the FCN release -> fcnseg weights.

Why in the engine and not beside the reader (models/caffe.py): the result is a weights file with
fcnseg's metadata (classes, palette, normalisation), written by engine/checkpoint, and models/
must not depend on the engine. The reader and the release table stay in models/caffe.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fcnseg.errors import UsageError


@dataclass(frozen=True)
class CaffeImport:
    """What `import_caffe_release` wrote: the weights file, the model and the layers it used."""

    out: Path
    model: str
    #: Caffe layer names copied into the net.
    loaded: list[str]
    #: Caffe layers the net has no module for (skipped).
    unused: list[str]


def import_caffe_release(
    caffemodel: str | Path,
    *,
    out: str | Path,
    release: str | None = None,
    model: str | None = None,
    data_format: str | None = None,
    partial: bool = False,
    options: Mapping[str, Any] | None = None,
) -> CaffeImport:
    """Load `caffemodel` into the net it was trained as and save it as weights at `out`.

    `release` (a release folder name such as voc-fcn8s) picks the model, its options and the
    dataset format; `model`, `data_format` and `options` override or replace it. The net is built
    with Caffe's BGR mean-pixel normalisation unless `options` say otherwise (or the net's own
    default is a Caffe input: SegNet's raw BGR). `partial` keeps the
    initialisation of layers the file lacks (e.g. the ILSVRC VGG16 net has no score layers).
    """
    from fcnseg.data.datasets.registry import get_dataset_class
    from fcnseg.engine.checkpoint import save_weights, weights_metadata
    from fcnseg.models import build_model
    from fcnseg.models.caffe import load_caffemodel, release_net

    net = release_net(release) if release else None
    model_name = model or (net.model if net else None)
    if model_name is None:
        raise UsageError("import-caffe: pass --release NET (e.g. voc-fcn8s) or --model NAME")
    built_options: dict[str, Any] = dict(net.options) if net and model_name == net.model else {}
    built_options.update(options or {})
    built_options.setdefault("normalization", _caffe_normalization(model_name))
    data_format = data_format or (net.data_format if net else "voc")
    info = get_dataset_class(data_format).class_info
    leading = net.leading_classes if net and data_format == net.data_format else ()
    classes = [*leading, *info.names]
    palette = [(0, 0, 0)] * len(leading) + [tuple(colour) for colour in info.palette]
    network = build_model(model_name, len(classes), pretrained=False, **built_options)
    loaded, unused = load_caffemodel(network, caffemodel, strict=not partial)
    meta = weights_metadata(
        model_name,
        built_options,
        num_classes=len(classes),
        classes=classes,
        palette=palette,
        normalization=network.normalization,
        ignore_index=info.ignore_index,
        data_format=data_format,
        converted_from=Path(caffemodel).name,
        **({"release_net": release} if release else {}),
    )
    save_weights(Path(out), network, meta)
    return CaffeImport(Path(out), model_name, loaded, unused)


def _caffe_normalization(model_name: str) -> str:
    """The input a Caffe-trained `model_name` expects: its builder's default when that is a Caffe
    preset (SegNet: "caffe_bgr_raw"), else the FCN release's BGR minus the mean pixel."""
    import inspect

    from fcnseg.models import model_info

    parameter = inspect.signature(model_info(model_name).builder).parameters.get("normalization")
    default = parameter.default if parameter is not None else None
    return default if isinstance(default, str) and default.startswith("caffe_") else "caffe_bgr"
