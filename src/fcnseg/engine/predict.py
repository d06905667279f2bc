"""Loading a trained model for inference, and `fcnseg predict`: images -> palette PNGs + overlays.

A trained model comes from one of three sources, all self-describing: released weights
(`.safetensors` with fcnseg metadata), a training checkpoint (`.pt`, holds the recipe) or a run
directory (its `model.safetensors`, else its checkpoints). Each yields the model plus the
metadata (classes, palette, normalisation, ignore label) that evaluation and prediction need.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fcnseg.engine.checkpoint import load_checkpoint, load_weights, resolve_run_checkpoint
from fcnseg.engine.device import resolve_device
from fcnseg.engine.evaluate import _primary, predict_batch_logits

#: Opacity of the class colours in the overlay images.
OVERLAY_ALPHA: float = 0.5

#: Inference modes a weights file may recommend (metadata "inference"), with the options each
#: may carry (keyword arguments of fcnseg.inference.predict_logits).
RECOMMENDABLE_OPTIONS: dict[str, frozenset[str]] = {
    "whole": frozenset(),
    "sliding": frozenset({"tile_size", "overlap", "blend"}),
    "multiscale": frozenset({"scales", "flip"}),
}


def inference_settings(
    meta: dict[str, Any], mode: str | None, options: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """(mode, options) for eval/predict: the command line's mode when given, else the one the
    weights recommend in their metadata ("inference"), else whole-image inference.

    Why: a released model can need a particular inference to reach its card's numbers (the CamVid
    model clears 0.30 IoU on every class only with flip + scale 1.25); stored with the weights,
    the plain `fcnseg eval --weights W` reproduces the card. Options given on the command line
    (e.g. --scales) override the stored ones.
    """
    if mode is not None:
        return mode, options
    stored = meta.get("inference") or {}
    stored_mode = stored.get("mode", "whole")
    stored_options = stored.get("options", {})
    allowed = RECOMMENDABLE_OPTIONS.get(stored_mode)
    if (
        allowed is None
        or not isinstance(stored_options, dict)
        or not set(stored_options) <= allowed
    ):
        raise ValueError(
            f"{meta.get('source', 'weights')}: unusable 'inference' metadata {stored!r}; "
            "pass --mode whole|sliding|multiscale"
        )
    return stored_mode, {**stored_options, **options}


def _build(meta: dict[str, Any], tensors: dict[str, torch.Tensor], source: Path) -> nn.Module:
    from fcnseg.models import build_model

    name = meta.get("model")
    if not name:
        raise ValueError(f"{source}: metadata names no model; re-export the weights")
    # The weights are loaded right after, so never load (or look for) encoder weights here.
    model = build_model(
        name, int(meta["num_classes"]), pretrained=False, **meta.get("model_options", {})
    )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{source}: weights do not fit model {name!r} ({first})") from None
    return model


def load_trained_model(
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    run: str | Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """(eval-mode model on CPU, metadata) from exactly one of weights / checkpoint / run."""
    given = [value for value in (weights, checkpoint, run) if value is not None]
    if len(given) != 1:
        raise ValueError("pass exactly one of --weights, --checkpoint or --run")
    if run is not None:
        run = Path(run)
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: run directory not found; pass a `fcnseg train` output")
        if (run / "model.safetensors").is_file():
            weights = run / "model.safetensors"
        else:
            checkpoint = resolve_run_checkpoint(run, prefer=("best.pt", "last.pt"))
    if weights is not None:
        source = Path(weights)
        tensors, meta = load_weights(source)
    else:
        source = Path(checkpoint)  # type: ignore[arg-type]
        state = load_checkpoint(source)
        tensors, meta = state["model"], dict(state["meta"])
        meta["config"] = state.get("config")
    if run is not None and meta.get("config") is None and (run / "config.yaml").is_file():
        import yaml

        meta["config"] = yaml.safe_load((run / "config.yaml").read_text())
    model = _build(meta, tensors, source)
    model.eval()
    meta["source"] = str(source)
    return model, meta


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files from paths, folders (their images) and glob patterns; one-line error if none."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        elif any(char in item for char in "*?["):
            found += sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        else:
            raise FileNotFoundError(f"{item}: no such image, folder or glob; check the path")
    if not found:
        raise FileNotFoundError(
            f"{' '.join(inputs)}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return found


def palette_image(
    labels: np.ndarray, palette: list[list[int]] | list[tuple[int, int, int]]
) -> Image.Image:
    """A mode "P" PNG whose pixel values are class ids and whose palette is the dataset's."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [channel for colour in palette for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def overlay_image(
    rgb: np.ndarray, labels: np.ndarray, palette, alpha: float = OVERLAY_ALPHA
) -> Image.Image:
    """The input and, beside it, the input blended with the class colours (for eyeballing)."""
    table = np.asarray(palette, dtype=np.float32)
    colours = table[np.clip(labels, 0, len(table) - 1)]
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colours
    side_by_side = np.concatenate([rgb.astype(np.float32), blended], axis=1)
    return Image.fromarray(side_by_side.clip(0, 255).astype(np.uint8), mode="RGB")


def predict_files(
    model: nn.Module,
    meta: dict[str, Any],
    files: list[Path],
    out_dir: Path,
    device: torch.device,
    mode: str = "whole",
    options: dict[str, Any] | None = None,
    overlay: bool = True,
    progress: bool = False,
) -> list[Path]:
    """Write `<stem>.png` (class ids, palette) and `<stem>_overlay.jpg` per input to out_dir."""
    from fcnseg.data.io import read_image
    from fcnseg.data.transforms import normalize

    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device).eval()
    palette = meta["palette"]
    written: list[Path] = []
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="predict", dynamic_ncols=True)
    for path in iterator:
        image = read_image(path)
        batch = normalize(image, meta.get("normalization", "imagenet")).unsqueeze(0).to(device)
        logits = _primary(predict_batch_logits(model, batch, mode, options))
        labels = logits.argmax(1)[0].cpu().numpy()
        target = out_dir / f"{path.stem}.png"
        palette_image(labels, palette).save(target)
        written.append(target)
        if overlay:
            rgb = image.permute(1, 2, 0).numpy()
            overlay_path = out_dir / f"{path.stem}_overlay.jpg"
            overlay_image(rgb, labels, palette).save(overlay_path, quality=90)
            written.append(overlay_path)
    return written


def run_prediction(
    inputs: list[str],
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    run: str | Path | None = None,
    device: str = "auto",
    mode: str | None = None,
    options: dict[str, Any] | None = None,
    overlay: bool = True,
    progress: bool = False,
) -> tuple[list[Path], list[Path]]:
    """`fcnseg predict` as a function: (input files, files written).

    Inputs are files, folders and glob patterns (see collect_inputs), checked before the model
    is loaded; the model comes from exactly one of weights / checkpoint / run, and `mode` /
    `options` default to the inference its weights recommend (see inference_settings).
    """
    torch_device = resolve_device(device)
    files = collect_inputs(inputs)
    model, meta = load_trained_model(weights, checkpoint, run)
    mode, options = inference_settings(meta, mode, options or {})
    written = predict_files(
        model,
        meta,
        files,
        Path(out_dir),
        torch_device,
        mode=mode,
        options=options,
        overlay=overlay,
        progress=progress,
    )
    return files, written
