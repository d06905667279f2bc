"""Export to ONNX and TorchScript that stays correct at every input size, and engines to run them.

An FCN's selling point is "any input size", and export is where that usually breaks: a tracer
records Python integers as constants, so a crop offset or an upsampling size computed from the
example input gets frozen into the graph and the exported model is silently wrong (or fails) at
any other size. fcnseg therefore never trusts an export blindly: after writing, the exported
model is run at several odd sizes (not multiples of 32, which is where frozen padding and crop
arithmetic shows) and compared with PyTorch; a mismatch is an error, and the file only appears
at its destination (atomic rename) once it passed.

`load_engine` gives one calling convention for the results: a callable image batch -> logits
(dict for multi-head models) with `normalization` and `classes` attributes, which is all
`fcnseg.inference.predict_logits` needs, so Python code can run an exported file through the
same sliding-window / multi-scale inference as a PyTorch model (`fcnseg bench --engines
onnxruntime` times it). The `fcnseg eval`, `predict` and `serve` commands reach these engines
through `fcnseg.inference.engines.resolve_engine` (`--engine`), which caches the checked graph.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from fcnseg.errors import FcnsegError, UsageError
from fcnseg.io_utils import atomic_write

ModelOutput = Tensor | dict[str, Tensor]
Engine = Literal["torch", "onnxruntime"]
ENGINES: tuple[str, ...] = ("torch", "onnxruntime")

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
#: Key of the JSON metadata embedded in TorchScript files (ONNX uses metadata_props).
TORCHSCRIPT_METADATA_FILE: str = "fcnseg.json"
INPUT_NAME: str = "image"
DEFAULT_OUTPUT_NAME: str = "logits"


class ExportError(FcnsegError):
    """The exported model does not reproduce PyTorch; the message says at which size and how."""


# ---------------------------------------------------------------------------------- helpers


def _heads(output: ModelOutput) -> dict[str, Tensor]:
    return output if isinstance(output, dict) else {DEFAULT_OUTPUT_NAME: output}


def _metadata(
    model: nn.Module, classes: Sequence[str] | None, normalization: str | None, heads: list[str]
) -> dict[str, str]:
    """What a deployed file must carry so that predict needs nothing but the file."""
    from fcnseg import __version__

    if normalization is None:
        # Every fcnseg model declares it (models.protocol); another module must be told.
        if not hasattr(model, "normalization"):
            raise TypeError(
                f"{type(model).__name__} does not declare `normalization`; pass normalization="
            )
        normalization = str(model.normalization)
    return {
        "fcnseg_version": __version__,
        "normalization": normalization,
        "classes": json.dumps(list(classes) if classes is not None else None),
        "heads": json.dumps(heads if heads != [DEFAULT_OUTPUT_NAME] else None),
        "model_name": type(model).__name__,
    }


def compare_outputs(reference: ModelOutput, candidate: ModelOutput, where: str) -> float:
    """Check `candidate` against `reference` with the export tolerances; returns max abs diff."""
    ref_heads, cand_heads = _heads(reference), _heads(candidate)
    if len(ref_heads) != len(cand_heads):
        raise ExportError(f"{where}: {len(cand_heads)} outputs instead of {len(ref_heads)}")
    worst = 0.0
    for (name, ref), cand in zip(ref_heads.items(), cand_heads.values(), strict=True):
        cand = cand.to(ref.device)
        if cand.shape != ref.shape:
            raise ExportError(
                f"{where}: output {name!r} has shape {tuple(cand.shape)}, PyTorch gives "
                f"{tuple(ref.shape)} (a size frozen at export time)"
            )
        diff = float((cand.float() - ref.float()).abs().max())
        agreement = float((cand.argmax(1) == ref.argmax(1)).float().mean())
        if diff > EXPORT_MAX_ABS_DIFF or agreement < EXPORT_MIN_ARGMAX_AGREEMENT:
            raise ExportError(
                f"{where}: output {name!r} differs from PyTorch (max abs diff {diff:.2e}, "
                f"argmax agreement {agreement:.4%})"
            )
        worst = max(worst, diff)
    return worst


def input_channels(model: nn.Module) -> int:
    """Channels of the example input: the fcnseg contract's `in_channels` (4 for RGB-D early
    fusion), 3 for a plain torch module that does not declare it."""
    return int(model.in_channels) if hasattr(model, "in_channels") else 3


def verify_engine(
    model: nn.Module,
    engine: Callable[[Tensor], ModelOutput],
    sizes: Sequence[tuple[int, int]] = DEFAULT_CHECK_SIZES,
    batch: int = 1,
    seed: int = 0,
) -> float:
    """Run `model` and `engine` on random inputs at `sizes`; raise ExportError on mismatch."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for height, width in sizes:
            images = torch.randn(batch, input_channels(model), height, width, generator=generator)
            worst = max(
                worst, compare_outputs(model(images), engine(images), f"size {height}x{width}")
            )
    return worst


def _prepare(model: nn.Module, example_size: tuple[int, int]) -> tuple[nn.Module, Tensor, list]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"export needs a torch nn.Module, got {type(model).__name__}")
    model = model.eval().cpu().float()
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(1, input_channels(model), *example_size, generator=generator)
    with torch.no_grad():
        heads = list(_heads(model(example)))
    return model, example, heads


# --------------------------------------------------------------------------------------- ONNX


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    opset: int = 17,
    dynamic: bool = True,
    *,
    classes: Sequence[str] | None = None,
    normalization: str | None = None,
    example_size: tuple[int, int] = DEFAULT_EXAMPLE_SIZE,
    check_sizes: Sequence[tuple[int, int]] | None = None,
) -> Path:
    """Write `model` as ONNX to `path` (atomically), checked against PyTorch with onnxruntime.

    Args:
        dynamic: batch, height and width are symbolic (one file serves every size); the check
            then runs at DEFAULT_CHECK_SIZES. With dynamic=False the graph is fixed to
            `example_size` and checked there only.
        classes, normalization: stored in metadata_props (default: the model's attributes
            `classes` and `normalization`), so a deployed .onnx is self-describing.
        check_sizes: overrides the verification sizes; an empty list skips verification.

    The model is put in eval mode on the CPU in float32 (export and check run there). Returns
    the path. Raises ExportError when onnxruntime disagrees with PyTorch.
    """
    import onnx

    path = Path(path)
    model, example, heads = _prepare(model, example_size)
    output_names = heads
    dynamic_axes = None
    if dynamic:
        axes = {0: "batch", 2: "height", 3: "width"}
        dynamic_axes = {INPUT_NAME: axes, **{name: axes for name in output_names}}
    sizes = check_sizes
    if sizes is None:
        sizes = DEFAULT_CHECK_SIZES if dynamic else (example_size,)

    def write_checked(temp: Path) -> None:
        # The check runs on the temporary file, so a failing export never reaches `path`.
        with warnings.catch_warnings():
            # Tracer warnings about Python ints are exactly what the size check below detects.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(temp),
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(temp))
        for key, value in _metadata(model, classes, normalization, heads).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(temp))
        if sizes:
            verify_engine(model, OnnxRuntimeModel(temp), sizes)

    return atomic_write(path, write_checked)


class InferenceOnly:
    """nn.Module look-alike calls (`eval`, `train`, `to`, `training`) for runnables that are not
    modules (an onnxruntime session, a router between graphs), so evaluation and prediction code
    can treat them and PyTorch models alike. They run on the CPU and never train: all no-ops."""

    training = False

    def eval(self) -> Any:
        return self

    def train(self, mode: bool = True) -> Any:
        """Inference only; accepted because evaluation restores a module's previous mode."""
        return self

    def to(self, *args: Any, **kwargs: Any) -> Any:
        return self


class OnnxRuntimeModel(InferenceOnly):
    """An .onnx file behind the model calling convention: float N x 3 x H x W -> logits.

    Inputs and outputs are torch tensors, so predict_logits, sliding windows and multi-scale
    work unchanged. `normalization`, `classes` and `heads` come from the file's metadata.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        spin: bool = False,
    ) -> None:
        """Open `path`. `spin=False` stops onnxruntime's worker threads from busy-waiting
        after each run: on a small or shared CPU the spinning threads steal the cores that
        PyTorch (pre/post-processing, other models) needs between runs."""
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file; create it with `fcnseg export`")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(
            str(path), options, providers=list(providers or ["CPUExecutionProvider"])
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, str] = dict(meta)
        self.normalization: str | None = meta.get("normalization")
        self.classes: list[str] | None = json.loads(meta.get("classes", "null"))
        self.heads: list[str] | None = json.loads(meta.get("heads", "null"))
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]

    def __call__(self, images: Tensor) -> ModelOutput:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session.run(self.output_names, {self.input_name: array})
        tensors = [torch.from_numpy(np.asarray(out)).to(images.device) for out in outputs]
        if self.heads:
            return dict(zip(self.heads, tensors, strict=True))
        return tensors[0]


# -------------------------------------------------------------------------------- TorchScript


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    method: Literal["auto", "script", "trace"] = "auto",
    classes: Sequence[str] | None = None,
    normalization: str | None = None,
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
    metadata = json.dumps(_metadata(model, classes, normalization, heads))
    failures: list[str] = []
    for how in methods:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if how == "script":
                    compiled = torch.jit.script(model)
                else:
                    compiled = torch.jit.trace(model, (example,), check_trace=False, strict=False)
            verify_engine(model, compiled, check_sizes)
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


class TorchScriptModel(InferenceOnly):
    """A TorchScript file behind the model calling convention, with its fcnseg metadata."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such TorchScript file; create it with export")
        extra = {TORCHSCRIPT_METADATA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit deprecation notice
            self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        self.module.eval()
        self.metadata: dict[str, str] = json.loads(extra[TORCHSCRIPT_METADATA_FILE] or "{}")
        self.normalization = self.metadata.get("normalization")
        self.classes = json.loads(self.metadata.get("classes", "null"))

    def __call__(self, images: Tensor) -> ModelOutput:
        return self.module(images)

    def to(self, *args: Any, **kwargs: Any) -> TorchScriptModel:
        """Unlike an onnxruntime session, a TorchScript module can move to another device."""
        self.module.to(*args, **kwargs)
        return self


# ---------------------------------------------------------------------------------- engines

Runnable = nn.Module | OnnxRuntimeModel | TorchScriptModel


def load_engine(
    path_or_model: str | os.PathLike[str] | nn.Module,
    engine: Engine = "torch",
    *,
    threads: int | None = None,
) -> Runnable:
    """A callable image batch -> logits for `predict_logits`, from a model or an exported file.

    - engine="torch": an nn.Module is returned in eval mode; a TorchScript file (.pt, .ts,
      .torchscript) is loaded with its metadata.
    - engine="onnxruntime": an .onnx file is opened with onnxruntime; an nn.Module is first
      exported (dynamic sizes, verified) to a temporary .onnx.
    """
    if engine not in ENGINES:
        raise UsageError(f"engine must be one of {ENGINES}, got {engine!r}")
    if isinstance(path_or_model, nn.Module):
        if engine == "torch":
            return path_or_model.eval()
        with tempfile.TemporaryDirectory() as folder:
            onnx_path = export_onnx(path_or_model, Path(folder) / "model.onnx", check_sizes=[])
            # The session keeps its own copy of the graph, so the file can go.
            return OnnxRuntimeModel(onnx_path, threads=threads)
    path = Path(path_or_model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file; pass an exported .onnx or .pt")
    if engine == "onnxruntime":
        if path.suffix != ".onnx":
            raise UsageError(
                f"{path}: engine 'onnxruntime' needs an .onnx file; export one with "
                "fcnseg.export.export_onnx (or `fcnseg export`)"
            )
        return OnnxRuntimeModel(path, threads=threads)
    if path.suffix == ".onnx":
        raise UsageError(f"{path}: an .onnx file needs engine='onnxruntime'")
    if path.suffix in (".pt", ".ts", ".torchscript", ".jit"):
        return TorchScriptModel(path)
    raise UsageError(
        f"{path}: not an exported model (.onnx, .pt TorchScript); for a checkpoint or "
        "weights file build the model with fcnseg.build_model and load its weights"
    )
