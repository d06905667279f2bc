"""A trained model from one of its three sources: released weights, a checkpoint or a run directory.

All three are self-describing: released weights (`.safetensors` with fcnseg metadata), a training
checkpoint (`.pt`, holds the recipe) or a run directory (its `model.safetensors`, else its
checkpoints). Each yields a `LoadedModel`: the eval-mode model on the CPU, its checked
`WeightsMetadata`, the file it was read from and the training recipe when one is known. Where
the weights came from and how they were trained belong to the loaded result, not to the
metadata: the metadata stays what the file says, so it can be written back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fcnseg.engine.checkpoint import load_checkpoint, load_weights, resolve_run_checkpoint
from fcnseg.engine.metadata import WeightsMetadata, validate_weights_metadata
from fcnseg.errors import FcnsegError, RecipeError, UsageError, WeightsError


@dataclass(frozen=True)
class LoadedModel:
    """A model read from weights / checkpoint / run, with what describes it."""

    model: nn.Module
    metadata: WeightsMetadata
    #: The file the weights were read from (keys the ONNX cache, named in messages and JSON);
    #: None for a model built in memory.
    source: Path | None
    #: The training recipe: the checkpoint's, else the one stored in the weights, else the run
    #: directory's config.yaml; None when none is known (eval then needs --format etc.).
    recipe: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The metadata with "config" (the recipe) and "source" added: the flat view the HTML
        report shows."""
        source = str(self.source) if self.source is not None else None
        return {**self.metadata.as_dict(), "config": self.recipe, "source": source}


def build_from_metadata(
    metadata: WeightsMetadata, tensors: dict[str, torch.Tensor], source: Path
) -> nn.Module:
    """The model `metadata` describes with `tensors` loaded (one-line WeightsError otherwise)."""
    from fcnseg.models import build_model

    # The weights are loaded right after, so never load (or look for) encoder weights here: a
    # path stored in the metadata (encoder_weights) is neither needed nor read.
    options = {
        key: value
        for key, value in metadata.model_options.items()
        if key not in ("pretrained", "encoder_weights")
    }
    try:
        model = build_model(metadata.model, metadata.num_classes, pretrained=False, **options)
    except FcnsegError as error:
        raise WeightsError(f"{source}: metadata describes no buildable model ({error})") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise WeightsError(
            f"{source}: weights do not fit model {metadata.model!r} ({first})"
        ) from None
    return model


def _run_recipe(run: Path) -> dict[str, Any] | None:
    """The run directory's config.yaml as a mapping, None when absent or unreadable."""
    import yaml

    from fcnseg.config import safe_load_yaml

    if not (run / "config.yaml").is_file():
        return None
    try:
        recipe = safe_load_yaml((run / "config.yaml").read_text())
    except (yaml.YAMLError, RecipeError, UnicodeDecodeError):
        return None  # only a fallback for eval's dataset defaults; the weights suffice
    return recipe if isinstance(recipe, dict) else None


def _source_files(
    weights: str | Path | None, checkpoint: str | Path | None, run: str | Path | None
) -> tuple[Path | None, Path | None]:
    """(weights file, checkpoint file): exactly one is set; a run directory gives either."""
    given = [value for value in (weights, checkpoint, run) if value is not None]
    if len(given) != 1:
        raise UsageError("pass exactly one of --weights, --checkpoint or --run")
    if run is None:
        return (Path(weights) if weights is not None else None), (
            Path(checkpoint) if checkpoint is not None else None
        )
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run directory not found; pass a `fcnseg train` output")
    if (run / "model.safetensors").is_file():
        return run / "model.safetensors", None
    return None, resolve_run_checkpoint(run, prefer=("best.pt", "last.pt"))


def load_model(
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    run: str | Path | None = None,
) -> LoadedModel:
    """The eval-mode model on the CPU and its description, from exactly one of the sources."""
    weights_file, checkpoint_file = _source_files(weights, checkpoint, run)
    if weights_file is not None:
        source = weights_file
        tensors, metadata = load_weights(source)
        recipe = dict(metadata.recipe) if metadata.recipe is not None else None
    else:
        source = checkpoint_file  # type: ignore[assignment]
        state = load_checkpoint(source)
        metadata = validate_weights_metadata(state.get("meta"), source)
        tensors = state["model"]
        if not isinstance(tensors, dict):
            raise WeightsError(f"{source}: checkpoint 'model' entry is not a state dict")
        recipe = state.get("config") if isinstance(state.get("config"), dict) else None
    if run is not None and recipe is None:
        recipe = _run_recipe(Path(run))
    model = build_from_metadata(metadata, tensors, source)
    model.eval()
    return LoadedModel(model, metadata, source, recipe)
