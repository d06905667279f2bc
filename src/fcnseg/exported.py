"""Exported models behind the model calling convention, so inference treats them like PyTorch's.

An `.onnx` file run by onnxruntime (`OnnxRuntimeModel`) and a TorchScript archive
(`TorchScriptModel`) are each a callable image batch -> logits (dict for multi-head models) with
`normalization` and `classes`, which is all `fcnseg.inference.predict_logits` needs
(`fcnseg.export.load_exported` opens either). `InferenceOnly` gives the non-module runnables the
nn.Module calls evaluation makes (`eval`, `train`, `to`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

ModelOutput = Tensor | dict[str, Tensor]
#: Key of the JSON metadata embedded in TorchScript files (ONNX uses metadata_props).
TORCHSCRIPT_METADATA_FILE: str = "fcnseg.json"


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
