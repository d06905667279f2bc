"""int8 graphs: onnxruntime static quantisation (QDQ, per-channel weights) calibrated on images.

Why static and calibrated: a segmentation net's cost is its convolutions over large activation
maps; dynamic quantisation would only cover MatMul/Gemm, so the activations' int8 ranges must be
known ahead, measured on real images (a few dozen training images, never the split that is
scored). Why QDQ: the graph stays a float graph with QuantizeLinear/DequantizeLinear pairs,
which onnxruntime fuses into int8 kernels on the CPU and which still opens anywhere else; weights
are per output channel, which matters for depthwise convolutions whose channel ranges differ by
orders of magnitude. Activations are uint8 and weights int8 (the x86 VNNI layout).

The int8 graph is stored in the same cache as the fp32 one (see `graph_cache.py`), keyed by the
weights' hash and `ExportOptions(int8=True)`, so `--engine onnxruntime-int8` in eval / predict /
serve finds it. Its sidecar records the calibration (source, images) and the argmax agreement
with PyTorch on real calibration images (random inputs say little about int8 ranges).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnseg.errors import DataError, UsageError
from fcnseg.inference.graph_cache import (
    CacheEntry,
    ExportOptions,
    Log,
    cache_record,
    export_checked,
    runtime_check,
    writable_entry,
    write_record,
)
from fcnseg.inference.graph_cache import announce as _announce
from fcnseg.io_utils import atomic_write

DEFAULT_CALIBRATION_IMAGES: int = 32
#: Images (of the calibration set) the int8 graph is compared with PyTorch on.
AGREEMENT_IMAGES: int = 8
#: Below this argmax agreement with fp32 PyTorch on real images the int8 graph is refused.
#: Measured (benchmarks/int8_agreement.py, benchmarks/RESULTS.md): both shipped CamVid models,
#: 8-bit or 7-bit weights, agree on 97.1-97.5 % of the pixels of 8 spread calibration images and
#: 97.1-97.3 % of 16 val images (worst single image 95.2 %); the saturated graph of issue 22 agreed
#: on 83.7 %. 93 % leaves 4 points under the lowest measurement and stays far above a broken graph.
INT8_MIN_AGREEMENT: float = 0.93
#: Weights quantised to 7 bits (-64..63). onnxruntime multiplies uint8 activations by int8 weights
#: with VPMADDUBSW on x86 CPUs without VNNI, which adds two products into a saturating int16:
#: 255 * 127 * 2 overflows it, 255 * 64 * 2 = 32640 does not. Full-range weights are exact only
#: on VNNI CPUs, so a graph made on one machine could lose pixels on another.
INT8_REDUCE_RANGE: bool = True
QUANTIZATION = "static QDQ, per-channel int8 weights (7-bit range), uint8 activations, MinMax"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _evenly(count: int, total: int) -> list[int]:
    """`count` indices spread over `total` (every one when count >= total): calibration should
    see the whole split, not its first sequence."""
    if count >= total:
        return list(range(total))
    return sorted({int(i * total / count) for i in range(count)})


def calibration_images(
    root: str | os.PathLike[str],
    normalization: str,
    *,
    data_format: str | None = None,
    split: str = "train",
    count: int = DEFAULT_CALIBRATION_IMAGES,
) -> tuple[list[torch.Tensor], str]:
    """(normalised 1 x 3 x H x W images, description) for calibration.

    With `data_format`, the `split` of that dataset (through the dataset registry); without, the
    image files directly inside `root` (a folder of images). Images keep their own sizes.
    """
    from fcnseg.data.transforms import normalize

    if count < 1:
        raise UsageError(f"--calibration-images must be at least 1, got {count}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"--calibrate {root}: not found; pass a dataset root or folder")
    images: list[torch.Tensor] = []
    if data_format is not None:
        from fcnseg.data.datasets.registry import build_dataset

        dataset = build_dataset(data_format, str(root), split)
        indices = _evenly(count, len(dataset))
        for index in indices:
            image, _ = dataset.load(index)
            images.append(normalize(image, normalization).unsqueeze(0))
        source = f"{data_format} {split} split of {root}, {len(indices)} of {len(dataset)} images"
    else:
        from fcnseg.data.io import read_image

        files = sorted(
            p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"--calibrate {root}: no images directly inside; pass --format FORMAT for a dataset"
            )
        chosen = [files[i] for i in _evenly(count, len(files))]
        for path in chosen:
            images.append(normalize(read_image(path), normalization).unsqueeze(0))
        source = f"folder {root}, {len(chosen)} of {len(files)} images"
    return images, source


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of images."""

    def __init__(self, input_name: str, images: list[torch.Tensor]) -> None:
        self.input_name = input_name
        self.images = images
        self._iter: Iterator[torch.Tensor] = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._iter, None)
        if image is None:
            return None
        return {self.input_name: image.float().contiguous().numpy()}

    def rewind(self) -> None:
        self._iter = iter(self.images)


def spread(images: list[torch.Tensor], count: int) -> list[torch.Tensor]:
    """`count` of `images` spread over the list (calibration images are themselves spread over
    the split, so the first few would all come from its first sequence)."""
    return [images[i] for i in _evenly(count, len(images))]


def argmax_agreement(model: nn.Module, runnable: Any, images: list[torch.Tensor]) -> dict[str, Any]:
    """Pixel-weighted argmax agreement of `runnable` with fp32 PyTorch on real images, and the
    worst single image (one image gone wrong hides in a pooled figure)."""
    same = total = 0
    worst = 1.0
    with torch.no_grad():
        for image in images:
            ref, cand = model(image), runnable(image)
            if isinstance(ref, dict):
                ref, cand = next(iter(ref.values())), next(iter(cand.values()))
            matches = int((ref.argmax(1) == cand.argmax(1)).sum())
            pixels = ref.argmax(1).numel()
            same, total = same + matches, total + pixels
            worst = min(worst, matches / max(1, pixels))
    agreement = same / max(1, total)
    return {
        "passed": agreement >= INT8_MIN_AGREEMENT,
        "argmax_agreement": agreement,
        "worst_image_agreement": worst,
        "threshold": INT8_MIN_AGREEMENT,
        "inputs": f"{len(images)} calibration images",
    }


def quantize_int8(
    model: nn.Module,
    weights_path: str | os.PathLike[str],
    images: list[torch.Tensor],
    *,
    calibration_source: str = "",
    opset: int = 17,
    out: str | os.PathLike[str] | None = None,
    log: Log | None = _announce,
) -> tuple[CacheEntry, dict[str, Any]]:
    """Quantise `model` (weights `weights_path`) to an int8 QDQ graph calibrated on `images`;
    store it in the engine cache (and copy it to `out`). Returns (entry, sidecar record).

    The fp32 graph comes from the cache (exported and checked once, see graph_cache.py). Raises
    RuntimeUnusable / ExportError when the fp32 graph fails its check, and ExportError when the
    int8 graph agrees with PyTorch on fewer than INT8_MIN_AGREEMENT of the pixels. The graph is
    made and checked in a scratch folder and enters the cache only when it passed: a refused
    graph is never left where `--engine onnxruntime-int8` would find it.
    """
    import onnxruntime

    if not images:
        raise DataError("int8 calibration needs at least one image")
    # The quantiser's sessions warn once per unused BN constant (hundreds of lines); errors only.
    onnxruntime.set_default_logger_severity(3)
    model = model.eval()
    _, fp32_entry, _, _ = export_checked(model, weights_path, ExportOptions(opset=opset), log=log)
    options = ExportOptions(opset=opset, int8=True)
    entry = writable_entry(weights_path, options)
    if log:
        log(f"fcnseg: calibrating int8 on {len(images)} images ({calibration_source})")
    started = time.perf_counter()
    check = _make_checked_graph(model, fp32_entry.onnx, entry.onnx, images, calibration_source)
    record = cache_record(
        weights_path,
        options,
        check,
        started,
        quantization=QUANTIZATION,
        calibration={"source": calibration_source, "images": len(images)},
    )
    write_record(entry, record)
    if out is not None:
        atomic_write(Path(out), lambda tmp: shutil.copyfile(entry.onnx, tmp))
    return entry, record


def _make_checked_graph(
    model: nn.Module, fp32: Path, target: Path, images: list[torch.Tensor], source: str
) -> dict[str, Any]:
    """Quantise into a scratch folder beside `target`, check, and only then move the graph to
    `target`; returns the check. A refused graph is deleted with the scratch folder."""
    from fcnseg.export import ExportError
    from fcnseg.exported import OnnxRuntimeModel

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as scratch:
        candidate = Path(scratch) / "int8.onnx"
        write_int8_graph(fp32, candidate, images, source)
        runnable = OnnxRuntimeModel(candidate)
        check = argmax_agreement(model, runnable, spread(images, AGREEMENT_IMAGES))
        if not check["passed"]:
            raise ExportError(
                f"int8 graph agrees with PyTorch on only {100 * check['argmax_agreement']:.2f}% "
                f"of calibration pixels (< {100 * INT8_MIN_AGREEMENT:.0f}%; not cached); use "
                "--engine onnxruntime"
            )
        check["random_inputs"] = runtime_check(model, runnable)["argmax_agreement"]
        atomic_write(target, lambda tmp: shutil.copyfile(candidate, tmp))
    return check


def write_int8_graph(
    fp32: Path,
    target: Path,
    images: list[torch.Tensor],
    calibration_source: str,
    *,
    reduce_range: bool = INT8_REDUCE_RANGE,
) -> None:
    """Calibrate and quantise the fp32 graph at `fp32` into `target` (written atomically, so a
    failed quantisation never leaves a half graph). `reduce_range`: see INT8_REDUCE_RANGE."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from fcnseg.export import INPUT_NAME

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as scratch:
        source = Path(scratch) / "fp32.onnx"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(fp32), str(source), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation only
            shutil.copyfile(fp32, source)
        quantized = Path(scratch) / "int8.onnx"
        quantize_static(
            str(source),
            str(quantized),
            _Reader(INPUT_NAME, images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # MinMax adds ReduceMin/ReduceMax per tensor to the graph, so calibration keeps two
            # scalars per tensor and image, not the activations. (Not CalibMaxIntermediateOutputs:
            # onnxruntime 1.32 drops the collected ranges when that limit is reached.)
            calibrate_method=CalibrationMethod.MinMax,
        )
        _copy_metadata(fp32, quantized, calibration_source, len(images))
        atomic_write(target, lambda tmp: shutil.copyfile(quantized, tmp))


def _copy_metadata(fp32: Path, int8: Path, source: str, images: int) -> None:
    """The fp32 graph's fcnseg metadata (normalisation, classes, heads) on the int8 graph, plus
    the precision and calibration, so the int8 file is self-describing too."""
    import onnx

    reference = {prop.key: prop.value for prop in onnx.load(str(fp32)).metadata_props}
    proto = onnx.load(str(int8))
    present = {prop.key for prop in proto.metadata_props}
    extra = {"precision": "int8", "calibration": json.dumps({"source": source, "images": images})}
    for key, value in {**reference, **extra}.items():
        if key not in present:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(proto, str(int8))
