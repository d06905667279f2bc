# size: export, its one agreement check and the loader of exported files belong together
"""Export to ONNX and TorchScript that stays correct at every input size, and a loader to run them.

An FCN's selling point is "any input size", and export is where that usually breaks: a tracer
records Python integers as constants, so a crop offset or an upsampling size computed from the
example input gets frozen into the graph and the exported model is silently wrong (or fails) at
any other size. fcnseg therefore never trusts an export blindly: after writing, the exported
model is run at several odd sizes (not multiples of 32, which is where frozen padding and crop
arithmetic shows) and compared with PyTorch; a mismatch is an error, and the file only appears
at its destination (atomic rename) once it passed.

`load_exported` gives one calling convention for the results: a callable image batch -> logits
(dict for multi-head models) with `normalization` and `classes` attributes, which is all
`fcnseg.inference.predict_logits` needs, so Python code can run an exported file through the
same sliding-window / multi-scale inference as a PyTorch model (`fcnseg bench --engines
onnxruntime` times it). The `fcnseg eval`, `predict` and `serve` commands reach these runtimes
through `fcnseg.inference.runtimes.resolve_runtime` (`--engine`), which caches the checked graph.

`compare_graph` is the one comparison of an exported graph with PyTorch: the export check here
and the runtime cache's one-time check both use it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fcnseg.errors import FcnsegError, UsageError
from fcnseg.exported import TORCHSCRIPT_METADATA_FILE, OnnxRuntimeModel, TorchScriptModel
from fcnseg.io_utils import atomic_write
from fcnseg.models.protocol import as_heads, is_multi_head

ModelOutput = Tensor | dict[str, Tensor]

#: Sizes (height, width) the export is checked at: none divisible by 32, portrait and
#: landscape, one below the 7x7 fc6 support of the paper nets without their pad 100.
DEFAULT_CHECK_SIZES: tuple[tuple[int, int], ...] = (
    (97, 131),
    (161, 115),
    (203, 257),
    (255, 189),
    (333, 301),
)
#: Size of the example input the graph is recorded with (odd on purpose, see above).
DEFAULT_EXAMPLE_SIZE: tuple[int, int] = (225, 289)
#: Acceptance of an export: max |logit difference| and share of pixels with the same argmax.
EXPORT_MAX_ABS_DIFF: float = 1e-3
EXPORT_MIN_ARGMAX_AGREEMENT: float = 0.999
INPUT_NAME: str = "image"
DEFAULT_OUTPUT_NAME: str = "logits"
ExportedRuntime = Literal["torch", "onnxruntime"]
#: Runtimes `load_exported` can open a model or an exported file with.
EXPORTED_RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime")


class ExportError(FcnsegError):
    """The exported model does not reproduce PyTorch; the message says at which size and how."""


# ---------------------------------------------------------------------------------- helpers


def _output_names(output: ModelOutput) -> list[str]:
    """The graph's output names: the heads of a multi-head model, else DEFAULT_OUTPUT_NAME."""
    return list(output) if is_multi_head(output) else [DEFAULT_OUTPUT_NAME]


def _metadata(
    model: nn.Module,
    classes: Sequence[str] | None,
    normalization: str | None,
    heads: list[str],
    stats: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """What a deployed file must carry so that predict needs nothing but the file; the
    normalisation also as numbers (default: the preset's), for runtimes outside fcnseg."""
    from fcnseg.version import __version__

    if normalization is None:
        # Every fcnseg model declares it (models.protocol); another module must be told.
        if not hasattr(model, "normalization"):
            raise TypeError(
                f"{type(model).__name__} does not declare `normalization`; pass normalization="
            )
        normalization = str(model.normalization)
    from fcnseg.data.normalization import stored_numbers

    stats = stored_numbers(normalization) if stats is None else dict(stats)
    return {
        "fcnseg_version": __version__,
        "normalization": normalization,
        "normalization_stats": json.dumps(stats),
        "classes": json.dumps(list(classes) if classes is not None else None),
        "heads": json.dumps(heads if heads != [DEFAULT_OUTPUT_NAME] else None),
        "model_name": type(model).__name__,
    }


def input_channels(model: nn.Module) -> int:
    """Channels of the example input: the fcnseg contract's `in_channels` (4 for RGB-D early
    fusion), 3 for a plain torch module that does not declare it."""
    return int(model.in_channels) if hasattr(model, "in_channels") else 3


# ---------------------------------------------------------------------------------- comparing


@dataclass(frozen=True)
class OutputAgreement:
    """How one output head of a graph agrees with PyTorch on one random input size."""

    size: tuple[int, int]
    head: str
    #: Share of pixels with the same argmax.
    argmax_agreement: float
    #: Largest |logit difference|.
    max_abs_diff: float

    @property
    def where(self) -> str:
        return f"size {self.size[0]}x{self.size[1]}"


def compare_graph(
    model: nn.Module,
    candidate: Callable[[Tensor], ModelOutput],
    sizes: Sequence[tuple[int, int]],
    *,
    batch: int = 1,
    seed: int = 0,
    accept: Callable[[OutputAgreement], None] | None = None,
) -> list[OutputAgreement]:
    """Every head of `candidate` (an exported graph, however it is run) against `model` on
    random normal inputs at `sizes`, in order: the one comparison behind the export check
    (`verify_export`, strict tolerances) and the runtime cache's one-time check
    (`inference.graph_cache.runtime_check`, argmax agreement only).

    `accept(entry)` sees each entry as soon as it is measured and may raise to stop at the first
    failure. A different head count or output shape is an ExportError at once.
    """
    generator = torch.Generator().manual_seed(seed)
    entries: list[OutputAgreement] = []
    with torch.no_grad():
        for height, width in sizes:
            images = torch.randn(batch, input_channels(model), height, width, generator=generator)
            reference, found = as_heads(model(images)), as_heads(candidate(images))
            where = f"size {height}x{width}"
            if len(reference) != len(found):
                raise ExportError(f"{where}: {len(found)} outputs instead of {len(reference)}")
            for (head, ref), cand in zip(reference.items(), found.values(), strict=True):
                cand = cand.to(ref.device)
                if cand.shape != ref.shape:
                    raise ExportError(
                        f"{where}: output {head!r} has shape {tuple(cand.shape)}, PyTorch gives "
                        f"{tuple(ref.shape)} (a size frozen at export time)"
                    )
                entry = OutputAgreement(
                    (height, width),
                    head,
                    float((cand.argmax(1) == ref.argmax(1)).float().mean()),
                    float((cand.float() - ref.float()).abs().max()),
                )
                if accept is not None:
                    accept(entry)
                entries.append(entry)
    return entries


def export_tolerance(model: nn.Module) -> Callable[[OutputAgreement], None]:
    """The export check: logits within EXPORT_MAX_ABS_DIFF and labels within the argmax bound;
    labels only where `export_check = "argmax"` (unpooling by indices, models/enet.py: another
    runtime's float noise can flip a near-tie in a pooling window and move a value)."""
    labels_only = getattr(model, "export_check", "logits") == "argmax"

    def accept(entry: OutputAgreement) -> None:
        off = not labels_only and entry.max_abs_diff > EXPORT_MAX_ABS_DIFF
        if off or entry.argmax_agreement < EXPORT_MIN_ARGMAX_AGREEMENT:
            raise ExportError(
                f"{entry.where}: output {entry.head!r} differs from PyTorch (max abs diff "
                f"{entry.max_abs_diff:.2e}, argmax agreement {entry.argmax_agreement:.4%})"
            )

    return accept


def verify_export(
    model: nn.Module,
    exported: Callable[[Tensor], ModelOutput],
    sizes: Sequence[tuple[int, int]] = DEFAULT_CHECK_SIZES,
    batch: int = 1,
    seed: int = 0,
) -> float:
    """ExportError at the first size where `exported` leaves the export tolerances (max |logit
    difference| EXPORT_MAX_ABS_DIFF, argmax agreement EXPORT_MIN_ARGMAX_AGREEMENT); else the
    largest |logit difference| seen."""
    entries = compare_graph(
        model, exported, sizes, batch=batch, seed=seed, accept=export_tolerance(model)
    )
    return max((entry.max_abs_diff for entry in entries), default=0.0)


def _prepare(model: nn.Module, example_size: tuple[int, int]) -> tuple[nn.Module, Tensor, list]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"export needs a torch nn.Module, got {type(model).__name__}")
    model = model.eval().cpu().float()
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, input_channels(model), *example_size, generator=generator)
    with torch.no_grad():
        heads = _output_names(model(example))
    return model, example, heads


# --------------------------------------------------------------------------------------- ONNX


def _trace_onnx(
    model: nn.Module,
    example: Tensor,
    path: Path,
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]] | None,
    opset: int,
) -> None:
    """The traced ONNX graph of `model` at `path` (TorchScript-based exporter)."""
    with warnings.catch_warnings():
        # Tracer warnings about Python ints are exactly what the size check detects.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _add_metadata_props(path: Path, metadata: dict[str, str]) -> None:
    """Store `metadata` in the ONNX file's metadata_props (what OnnxRuntimeModel reads)."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    opset: int = 17,
    dynamic: bool = True,
    *,
    classes: Sequence[str] | None = None,
    normalization: str | None = None,
    normalization_stats: Mapping[str, Any] | None = None,
    example_size: tuple[int, int] = DEFAULT_EXAMPLE_SIZE,
    check_sizes: Sequence[tuple[int, int]] | None = None,
) -> Path:
    """Write `model` as ONNX to `path` (atomically), checked against PyTorch with onnxruntime.

    Args:
        dynamic: batch, height and width are symbolic (one file serves every size); the check
            then runs at DEFAULT_CHECK_SIZES. With dynamic=False the graph is fixed to
            `example_size` and checked there only.
        classes, normalization: stored in metadata_props (default: the model's attributes
            `classes` and `normalization`), so a deployed .onnx is self-describing;
            `normalization_stats` ({mean, std} per channel) default the preset's numbers.
        check_sizes: overrides the verification sizes; an empty list skips verification.

    The model is put in eval mode on the CPU in float32 (export and check run there). Returns
    the path. Raises ExportError when onnxruntime disagrees with PyTorch.
    """
    import onnx  # noqa: F401 - the export extra is needed; fail before any work without it

    path = Path(path)
    model, example, heads = _prepare(model, example_size)
    dynamic_axes = None
    if dynamic:
        axes = {0: "batch", 2: "height", 3: "width"}
        dynamic_axes = {INPUT_NAME: axes, **{name: axes for name in heads}}
    sizes = check_sizes
    if sizes is None:
        sizes = DEFAULT_CHECK_SIZES if dynamic else (example_size,)

    def write_checked(temp: Path) -> None:
        # The check runs on the temporary file, so a failing export never reaches `path`.
        _trace_onnx(model, example, temp, heads, dynamic_axes, opset)
        _add_metadata_props(
            temp, _metadata(model, classes, normalization, heads, normalization_stats)
        )
        if sizes:
            verify_export(model, OnnxRuntimeModel(temp), sizes)

    return atomic_write(path, write_checked)


# -------------------------------------------------------------------------------- TorchScript


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    method: Literal["auto", "script", "trace"] = "auto",
    classes: Sequence[str] | None = None,
    normalization: str | None = None,
    normalization_stats: Mapping[str, Any] | None = None,
    example_size: tuple[int, int] = DEFAULT_EXAMPLE_SIZE,
    check_sizes: Sequence[tuple[int, int]] = DEFAULT_CHECK_SIZES,
) -> Path:
    """Write `model` as TorchScript to `path` (atomically), checked at `check_sizes`.

    "auto" tries `torch.jit.script` first (keeps Python control flow, so size-dependent crops
    stay dynamic) and falls back to `torch.jit.trace` when scripting fails or disagrees;
    whichever is written has passed the size check. Metadata goes in the archive's extra file
    `fcnseg.json`.
    """
    path = Path(path)
    model, example, heads = _prepare(model, example_size)
    methods = ["script", "trace"] if method == "auto" else [method]
    metadata = json.dumps(_metadata(model, classes, normalization, heads, normalization_stats))
    failures: list[str] = []
    for how in methods:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if how == "script":
                    compiled = torch.jit.script(model)
                else:
                    compiled = torch.jit.trace(model, (example,), check_trace=False, strict=False)
            verify_export(model, compiled, check_sizes)
        except Exception as error:  # noqa: BLE001 - every failure is reported below
            failures.append(f"{how}: {str(error).splitlines()[0] if str(error) else error!r}")
            continue

        def write(temp: Path, compiled: torch.jit.ScriptModule = compiled) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # jit deprecation notice
                torch.jit.save(
                    compiled, str(temp), _extra_files={TORCHSCRIPT_METADATA_FILE: metadata}
                )

        return atomic_write(path, write)
    raise ExportError(f"TorchScript export of {type(model).__name__} failed: {'; '.join(failures)}")


# ---------------------------------------------------------------------------------- loading

Runnable = nn.Module | OnnxRuntimeModel | TorchScriptModel


def load_exported(
    path_or_model: str | os.PathLike[str] | nn.Module,
    runtime: ExportedRuntime = "torch",
    *,
    threads: int | None = None,
) -> Runnable:
    """A callable image batch -> logits for `predict_logits`, from a model or an exported file.

    - runtime="torch": an nn.Module is returned in eval mode; a TorchScript file (.pt, .ts,
      .torchscript) is loaded with its metadata.
    - runtime="onnxruntime": an .onnx file is opened with onnxruntime; an nn.Module is first
      exported (dynamic sizes, verified) to a temporary .onnx.
    """
    if runtime not in EXPORTED_RUNTIMES:
        raise UsageError(f"runtime must be one of {EXPORTED_RUNTIMES}, got {runtime!r}")
    if isinstance(path_or_model, nn.Module):
        if runtime == "torch":
            return path_or_model.eval()
        with tempfile.TemporaryDirectory() as folder:
            onnx_path = export_onnx(path_or_model, Path(folder) / "model.onnx", check_sizes=[])
            # The session keeps its own copy of the graph, so the file can go.
            return OnnxRuntimeModel(onnx_path, threads=threads)
    path = Path(path_or_model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file; pass an exported .onnx or .pt")
    if runtime == "onnxruntime":
        if path.suffix != ".onnx":
            raise UsageError(
                f"{path}: runtime 'onnxruntime' needs an .onnx file; export one with "
                "fcnseg.export.export_onnx (or `fcnseg export`)"
            )
        return OnnxRuntimeModel(path, threads=threads)
    if path.suffix == ".onnx":
        raise UsageError(f"{path}: an .onnx file needs runtime='onnxruntime'")
    if path.suffix in (".pt", ".ts", ".torchscript", ".jit"):
        return TorchScriptModel(path)
    raise UsageError(
        f"{path}: not an exported model (.onnx, .pt TorchScript); for a checkpoint or "
        "weights file build the model with fcnseg.build_model and load its weights"
    )
