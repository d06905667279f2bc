"""`fcnseg export` as functions: a trained model (weights / checkpoint / run) written as
safetensors weights, an ONNX or TorchScript file, or an int8 ONNX graph.

Why here and not in export.py or inference/quantize.py: those turn a model in memory into a
file; loading a trained model from its three sources is the engine's job (engine/loading.py),
and the layer rule keeps inference/ and export.py from importing the engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fcnseg.engine.loading import load_model
from fcnseg.inference.graph_cache import announce

PathLike = str | os.PathLike[str]


def export_trained(
    target: str,
    out: PathLike,
    *,
    weights: PathLike | None = None,
    checkpoint: PathLike | None = None,
    run: PathLike | None = None,
) -> Path:
    """Write the trained model from exactly one source as `target` ("safetensors", "onnx" or
    "torchscript") to `out`; returns the path written.

    safetensors keeps the weights file's metadata exactly as stored (no runtime keys), so a
    checkpoint or run becomes a self-describing release file.
    """
    loaded = load_model(weights, checkpoint, run)
    out = Path(out)
    if target == "safetensors":
        from fcnseg.engine.checkpoint import save_weights

        save_weights(out, loaded.model, loaded.metadata.as_dict())
        return out
    from fcnseg import export

    exporter = export.export_onnx if target == "onnx" else export.export_torchscript
    exporter(
        loaded.model,
        out,
        classes=loaded.metadata["classes"],
        normalization=loaded.metadata["normalization"],
        normalization_stats=input_numbers(loaded.metadata).as_dict(),
    )
    return out


def export_int8(
    out: PathLike,
    calibrate: PathLike,
    *,
    weights: PathLike | None = None,
    checkpoint: PathLike | None = None,
    run: PathLike | None = None,
    data_format: str | None = None,
    split: str = "train",
    count: int | None = None,
    log: Any = announce,
) -> tuple[Any, dict[str, Any]]:
    """`fcnseg export --to onnx --int8`: the trained model from exactly one of weights /
    checkpoint / run, calibrated on `calibrate` (see quantize.calibration_images), quantised and
    copied to `out` (and cached for `--engine onnxruntime-int8`). Returns (entry, sidecar record).

    The model is loaded before the calibration images are read, so a bad model source is
    reported first, as every other command does.
    """
    from fcnseg.inference import quantize

    loaded = load_model(weights, checkpoint, run)
    images, source = quantize.calibration_images(
        calibrate,
        input_numbers(loaded.metadata),
        data_format=data_format,
        split=split,
        count=quantize.DEFAULT_CALIBRATION_IMAGES if count is None else count,
    )
    return quantize.quantize_int8(
        loaded.model, loaded.source, images, calibration_source=source, out=out, log=log
    )


def input_numbers(metadata: Any) -> Any:
    """The normalisation numbers of a model's metadata: a `WeightsMetadata`'s stored ones (or
    its preset's); a plain mapping names a preset."""
    from fcnseg.data.normalization import resolve

    if hasattr(metadata, "input_normalization"):
        return metadata.input_normalization()
    return resolve(metadata["normalization"])
