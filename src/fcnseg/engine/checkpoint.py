"""Checkpoints (`.pt`, resumable) and released weights (`.safetensors`, self-describing).

Neither format executes code when loaded: checkpoints hold only tensors and primitive values and
are read with `torch.load(weights_only=True)`; released weights are safetensors whose JSON
header carries everything `predict`/`eval` need (model name, classes, palette, normalisation,
ignore label). Writes are atomic (`fcnseg.io_utils.atomic_write`), so a SIGKILL during a save
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fcnseg.config import Config, config_from_dict
from fcnseg.errors import WeightsError
from fcnseg.io_utils import atomic_write

if TYPE_CHECKING:
    from fcnseg.engine.metadata import WeightsMetadata

CHECKPOINT_VERSION = 1
#: safetensors metadata key holding the JSON description of the model.
WEIGHTS_METADATA_KEY = "fcnseg"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors/primitives (weights_only-loadable)."""
    version, python_state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(python_state), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (state dicts are saved without `module.`)."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically save a checkpoint dict (tensors and primitives only)."""
    payload = {"version": CHECKPOINT_VERSION, **state}
    write_file(Path(path), lambda tmp: torch.save(payload, tmp))


#: Free bytes under which a failed write is taken for a full disk (torch.save reports a failed
#: write without its errno).
FULL_DISK_BYTES = 64 * 2**20
#: Fragments of torch's and safetensors' messages for a write the filesystem refused.
_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed", "I/O error")


def write_file(path: Path, write: Callable[[Path], None]) -> None:
    """`atomic_write(path, write)`, with the filesystem's refusal raised as an OSError.

    Why: torch.save on a full disk raises RuntimeError("[enforce fail at inline_container.cc]
    unexpected pos ...") without the errno, and safetensors a SafetensorError with the errno
    only in its text ("... (os error 28)"), so the CLI printed a traceback. The previous file
    stays as it was either way (atomic_write).
    """

    def guarded(tmp: Path) -> None:
        try:
            write(tmp)
        except OSError:
            raise
        except Exception as error:
            message = str(error)
            if not any(fragment in message for fragment in _WRITE_FAILURES):
                raise
            reported = re.search(r"os error (\d+)", message)  # safetensors names the errno
            if reported is not None:
                code = int(reported.group(1))
            elif shutil.disk_usage(tmp.parent).free < FULL_DISK_BYTES:
                code = errno.ENOSPC
            else:
                code = errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from error

    atomic_write(path, guarded)


def config_from_checkpoint(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The recipe a checkpoint was trained with, plus overrides (e.g. more epochs), so that
    `fcnseg train --resume RUN` needs no --config."""
    recipe = load_checkpoint(path).get("config")
    if not isinstance(recipe, dict):
        raise WeightsError(
            f"{path}: checkpoint holds no training recipe ('config'); pass --config RECIPE"
        )
    return config_from_dict(recipe, overrides)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code; one-line errors for bad files."""
    path = Path(path)
    if path.is_dir():
        path = resolve_run_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found; pass a run directory or a .pt file")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle's protocol first
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file
        raise WeightsError(
            f"{path}: not a readable fcnseg checkpoint ({type(error).__name__}); pass a .pt "
            "written by `fcnseg train`"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise WeightsError(f"{path}: not an fcnseg checkpoint (no 'model' entry)")
    return state


def resolve_run_checkpoint(run_dir: Path, prefer: tuple[str, ...] = ("last.pt",)) -> Path:
    """The checkpoint file inside a run directory (`checkpoints/last.pt` by default)."""
    for name in prefer:
        for candidate in (run_dir / "checkpoints" / name, run_dir / name):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{run_dir}: no {' or '.join(prefer)} in this run directory; pass the run directory "
        "written by `fcnseg train` or a checkpoint file"
    )


def check_num_classes(source: str | Path, found: int, expected: int) -> None:
    if found != expected:
        raise WeightsError(
            f"{source}: weights are for {found} classes but the dataset has {expected}; use "
            "weights trained on this dataset, or fine-tune from them with model.init=PATH"
        )


def weights_metadata(
    model: str,
    model_options: dict[str, Any],
    *,
    num_classes: int,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    normalization: str,
    ignore_index: int,
    data_format: str,
    **extra: Any,
) -> dict[str, Any]:
    """The description a weights file carries so that it can be used on its own: which model to
    build (name, options, class count), how to feed it (normalisation) and how to read its output
    (class names, palette, ignore label, dataset format). `extra` entries follow (e.g. the step,
    the mean IU, the Caffe file it was converted from).

    One function for every writer (training, `fcnseg import-caffe`), so all weights files
    describe themselves with the same keys that `engine.metadata.validate_weights_metadata` reads.
    """
    return {
        "model": model,
        "model_options": model_options,
        "num_classes": int(num_classes),
        "classes": list(classes),
        "palette": [list(colour) for colour in palette],
        "normalization": normalization,
        "ignore_index": int(ignore_index),
        "data_format": data_format,
        **extra,
    }


def save_weights(path: Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write `model`'s weights as safetensors with a JSON description in the header."""
    tensors = {
        key: value.detach().cpu().contiguous() for key, value in unwrap(model).state_dict().items()
    }
    write_weights(path, tensors, metadata)


def write_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write tensors as safetensors with the fcnseg metadata in the header (atomically)."""
    from safetensors.torch import save_file

    header = {WEIGHTS_METADATA_KEY: json.dumps(metadata)}
    write_file(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=header))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], WeightsMetadata]:
    """Read safetensors weights and their checked fcnseg metadata (model, classes, palette, ...)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found; pass a .safetensors file")
    try:
        with safe_open(str(path), framework="pt") as stream:
            header = stream.metadata() or {}
            tensors = {key: stream.get_tensor(key) for key in stream.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from None
    if WEIGHTS_METADATA_KEY not in header:
        raise WeightsError(
            f"{path}: safetensors header has no '{WEIGHTS_METADATA_KEY}' metadata; export "
            "weights with `fcnseg export --format safetensors`"
        )
    try:
        metadata = json.loads(header[WEIGHTS_METADATA_KEY])
    except (ValueError, RecursionError):
        raise WeightsError(
            f"{path}: '{WEIGHTS_METADATA_KEY}' metadata is not valid JSON; re-export the weights"
        ) from None
    from fcnseg.engine.metadata import validate_weights_metadata

    return tensors, validate_weights_metadata(metadata, path)


def update_weights_metadata(path: str | Path, **entries: Any) -> None:
    """Add or replace entries of a weights file's fcnseg metadata; the tensors stay as they are.

    Used to record how a released model is meant to be run (the "inference" entry, read by
    `fcnseg eval/predict` when no --mode is given) after it has been evaluated.
    """
    tensors, metadata = load_weights(path)
    write_weights(path, tensors, {**metadata.as_dict(), **entries})
