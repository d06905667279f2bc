"""Loading a trained model for inference, and `fcnseg predict`: images -> palette PNGs + overlays.

A trained model comes from one of three sources, all self-describing: released weights
(`.safetensors` with fcnseg metadata), a training checkpoint (`.pt`, holds the recipe) or a run
directory (its `model.safetensors`, else its checkpoints). Each yields the model plus the
metadata (classes, palette, normalisation, ignore label) that evaluation and prediction need.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from fcnseg.engine.checkpoint import load_checkpoint, load_weights, resolve_run_checkpoint
from fcnseg.engine.device import resolve_device
from fcnseg.engine.evaluate import _primary, predict_batch_logits
from fcnseg.engine.metadata import (
    INFERENCE_OPTIONS,
    check_forward_pixels,
    check_inference_options,
    validate_weights_metadata,
)
from fcnseg.errors import FcnsegError, OutputError, RecipeError, UsageError, WeightsError

#: Opacity of the class colours in the overlay images.
OVERLAY_ALPHA: float = 0.5

#: Inference modes a weights file may recommend (metadata "inference"), with the options each
#: may carry (keyword arguments of fcnseg.inference.predict_logits).
RECOMMENDABLE_OPTIONS: dict[str, frozenset[str]] = INFERENCE_OPTIONS


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
        check_inference_options(mode, options, "command line")
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
        raise WeightsError(
            f"{meta.get('source', 'weights')}: unusable 'inference' metadata {stored!r}; "
            "pass --mode whole|sliding|multiscale"
        )
    merged = {**stored_options, **options}
    check_inference_options(stored_mode, merged, "command line")
    return stored_mode, merged


def _build(meta: dict[str, Any], tensors: dict[str, torch.Tensor], source: Path) -> nn.Module:
    from fcnseg.models import build_model

    name = meta.get("model")
    if not name:
        raise WeightsError(f"{source}: metadata names no model; re-export the weights")
    # The weights are loaded right after, so never load (or look for) encoder weights here: a
    # path stored in the metadata (encoder_weights) is neither needed nor read.
    options = {
        key: value
        for key, value in (meta.get("model_options") or {}).items()
        if key not in ("pretrained", "encoder_weights")
    }
    try:
        model = build_model(name, int(meta["num_classes"]), pretrained=False, **options)
    except FcnsegError as error:
        raise WeightsError(f"{source}: metadata describes no buildable model ({error})") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise WeightsError(f"{source}: weights do not fit model {name!r} ({first})") from None
    return model


def load_trained_model(
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    run: str | Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """(eval-mode model on CPU, metadata) from exactly one of weights / checkpoint / run."""
    given = [value for value in (weights, checkpoint, run) if value is not None]
    if len(given) != 1:
        raise UsageError("pass exactly one of --weights, --checkpoint or --run")
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
        meta = validate_weights_metadata(state.get("meta"), source)
        tensors, meta = state["model"], dict(meta)
        if not isinstance(tensors, dict):
            raise WeightsError(f"{source}: checkpoint 'model' entry is not a state dict")
        config = state.get("config")
        meta["config"] = config if isinstance(config, dict) else None
    if run is not None and meta.get("config") is None and (run / "config.yaml").is_file():
        import yaml

        from fcnseg.config import safe_load_yaml

        try:
            recipe = safe_load_yaml((run / "config.yaml").read_text())
        except (yaml.YAMLError, RecipeError, UnicodeDecodeError):
            recipe = None  # only a fallback for eval's dataset defaults; the weights suffice
        meta["config"] = recipe if isinstance(recipe, dict) else None
    model = _build(meta, tensors, source)
    model.eval()
    meta["source"] = str(source)
    return model, meta


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_MAGIC = "*?["


def _match_parts(parts: list[str], segments: list[str]) -> bool:
    """Whether path components `parts` match glob `segments` (`**` = zero or more folders)."""
    if not segments:
        return not parts
    head, rest = segments[0], segments[1:]
    if head == "**":
        if _match_parts(parts, rest):
            return True
        return bool(parts) and not parts[0].startswith(".") and _match_parts(parts[1:], segments)
    if not parts:
        return False
    name = parts[0]
    if name.startswith(".") and not head.startswith("."):
        return False  # as glob: wildcards do not match hidden names
    return fnmatch.fnmatchcase(name, head) and _match_parts(parts[1:], rest)


def expand_glob(pattern: str) -> list[Path]:
    """Files matching `pattern` (with `**`), found without following directory symlinks.

    Why not glob.glob: on this Python it follows symlinked folders under `**`, so a link to a
    parent folder repeats the same files until the path length limit. os.walk with
    followlinks=False visits each real folder once; a symlinked file is still matched.
    """
    segments = pattern.replace(os.sep, "/").split("/")
    absolute = pattern.startswith(("/", os.sep))
    base_parts: list[str] = []
    for segment in segments[1 if absolute else 0 :]:
        if any(char in segment for char in _MAGIC):
            break
        base_parts.append(segment)
    rest = segments[(1 if absolute else 0) + len(base_parts) :]
    base = Path("/" if absolute else ".").joinpath(*base_parts)
    if not rest or not base.is_dir():
        return []
    rest = [segment for segment in rest if segment]  # "a//b" and a trailing "/"
    found: list[Path] = []
    for folder, dirs, names in os.walk(base, followlinks=False):
        dirs.sort()
        relative = Path(folder).relative_to(base).parts
        for name in sorted(names):
            if _match_parts([*relative, name], rest):
                found.append(Path(folder) / name)
    return found


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Files from paths, folders (their images) and glob patterns, each file once.

    A file reached twice (named twice, by two patterns, or through a symlink) is listed once,
    by its resolved path; order is the order of first appearance. One-line error if none.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        elif path.is_file():
            found.append(path)
        elif any(char in item for char in _MAGIC):
            found += [p for p in expand_glob(item) if p.is_file()]
        else:
            raise FileNotFoundError(f"{item}: no such image, folder or glob; check the path")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise FileNotFoundError(
            f"{' '.join(inputs)}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return list(unique.values())


def output_names(files: list[Path]) -> tuple[dict[Path, Path], Path | None]:
    """Output path (relative to --out, without suffix) per input, and the mirrored root.

    When every input's stem is unique the outputs are flat (`<stem>.png`, as always). When two
    inputs share a stem (a/scene.png and b/scene.png) the outputs mirror the inputs' folders
    relative to their common folder (`a/scene.png`, `b/scene.png`), and the common folder is
    returned so the rule can be printed; inputs with the same stem in one folder (scene.png,
    scene.jpg) keep their suffix in the name (`scene_png`, `scene_jpg`). Nothing is lost.
    """
    stems = [path.stem for path in files]
    if len(set(stems)) == len(stems):
        return {path: Path(path.stem) for path in files}, None
    resolved = {path: path.resolve() for path in files}
    root = Path(os.path.commonpath([str(r.parent) for r in resolved.values()]))
    keys = {path: resolved[path].parent.relative_to(root) / path.stem for path in files}
    counts: dict[Path, int] = {}
    for key in keys.values():
        counts[key] = counts.get(key, 0) + 1
    names: dict[Path, Path] = {}
    for path, key in keys.items():
        if counts[key] > 1:
            key = key.with_name(f"{path.stem}_{path.suffix.lstrip('.').lower() or 'file'}")
        names[path] = key
    return names, root


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


@dataclass
class PredictionRun:
    """What `run_prediction` read and wrote: every input is in `written` or in `failed`."""

    files: list[Path]
    written: list[Path] = field(default_factory=list)
    #: (input, one-line reason) per input that could not be predicted.
    failed: list[tuple[Path, str]] = field(default_factory=list)
    #: The inputs' common folder when outputs mirror it (inputs share a file name), else None.
    mirrored_from: Path | None = None
    #: The engine that ran the model (fcnseg.inference.engines.ResolvedEngine).
    engine: Any = None
    #: This process's rank under torchrun (0 otherwise); only rank 0 prints the summary.
    rank: int = 0
    #: (files written, inputs failed) summed over all ranks under torchrun, else None.
    world_counts: tuple[int, int] | None = None

    def counts(self) -> tuple[int, int]:
        """(files written, inputs failed) over every process: what the summary line reports."""
        if self.world_counts is not None:
            return self.world_counts
        return len(self.written), len(self.failed)


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
    report: PredictionRun | None = None,
    batch_size: int = 1,
    num_workers: int | None = None,
    background_writes: bool = True,
    names: dict[Path, Path] | None = None,
) -> list[Path]:
    """Write `<name>.png` (class ids, palette) and `<name>_overlay.jpg` per input under out_dir.

    Names follow `output_names` (flat stems, or mirrored folders when stems collide); `names`
    passes them in when `files` is one rank's shard, so the names stay those of all inputs. An
    input that cannot be used (unreadable, a decompression bomb, wrong channels, too many pixels
    for one forward) is reported on stderr in one line and skipped; the others are still written.
    Its reason is added to `report.failed` when a report is given, otherwise the error is raised.

    Speed (engine.predict_loader): inputs decode in `num_workers` DataLoader workers (None: the
    default for this many inputs), consecutive images of one size share a forward of up to
    `batch_size`, and the PNG/JPEG writes run on a background thread; every write has finished
    when this returns. batch_size 1 computes exactly what the one-image loop computed.
    """
    from fcnseg.data.transforms import normalize
    from fcnseg.engine.predict_loader import (
        BackgroundWriter,
        decoded_inputs,
        default_workers,
        failure_reason,
        same_size_groups,
    )

    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be 1 or more")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device).eval()
    palette = meta["palette"]
    if names is None:
        names, _ = output_names(files)
    written: list[Path] = []
    workers = default_workers(len(files)) if num_workers is None else num_workers
    # Without a report an error is raised, as before: decode in-process so it is the original one.
    decoded = decoded_inputs(files, workers if report is not None else 0, report is None)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="predict", dynamic_ncols=True)

    def skip(path: Path, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else failure_reason(path, error)
        print(f"fcnseg predict: skipped {reason}", file=sys.stderr)
        report.failed.append((path, reason))  # type: ignore[union-attr]

    def forward(images: list[torch.Tensor]) -> torch.Tensor:
        batch = torch.stack([normalize(im, meta.get("normalization", "imagenet")) for im in images])
        return _primary(predict_batch_logits(model, batch.to(device), mode, options))

    def write_job(path: Path, labels: np.ndarray, image: torch.Tensor):
        target = out_dir / names[path].with_name(names[path].name + ".png")
        overlay_path = out_dir / names[path].with_name(names[path].name + "_overlay.jpg")

        def job() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            palette_image(labels, palette).save(target)
            if overlay:
                rgb = image.permute(1, 2, 0).numpy()
                overlay_image(rgb, labels, palette).save(overlay_path, quality=90)

        written.append(target)
        if overlay:
            written.append(overlay_path)
        return job

    writer = BackgroundWriter(foreground=not background_writes)
    try:
        for group in same_size_groups(decoded, batch_size):
            if bar is not None:
                bar.update(len(group))
            ready = []
            for item in group:
                if item.image is None:
                    skip(item.path, item.reason or f"{item.path}: could not be read")
                    continue
                try:
                    check_forward_pixels(
                        item.image.shape[-2], item.image.shape[-1], mode, options or {}, item.path
                    )
                except (FcnsegError, OSError) as error:
                    if report is None:
                        raise
                    skip(item.path, error)
                    continue
                ready.append(item)
            if not ready:
                continue
            try:
                logits = [forward([item.image for item in ready])]
                owners = [ready]
            except (FcnsegError, OSError) as error:
                if len(ready) == 1:
                    if report is None:
                        raise
                    skip(ready[0].path, error)
                    continue
                # Retry one by one so the failure is charged to the input that caused it.
                logits, owners = [], []
                for item in ready:
                    try:
                        logits.append(forward([item.image]))
                        owners.append([item])
                    except (FcnsegError, OSError) as error:
                        if report is None:
                            raise
                        skip(item.path, error)
            for batch_logits, items in zip(logits, owners, strict=True):
                labels = batch_logits.argmax(1).cpu().numpy()
                for offset, item in enumerate(items):
                    writer.submit(write_job(item.path, labels[offset], item.image))
    except BaseException:
        writer.foreground = True  # stop taking jobs; drain what is queued, keep the first error
        try:
            writer.close()
        except BaseException:  # noqa: BLE001 - the loop's own error is the one to report
            pass
        raise
    finally:
        if bar is not None:
            bar.close()
    writer.close()
    if report is not None:
        report.written += written
    return written


def check_output_folder(out_dir: Path) -> None:
    """OutputError when `out_dir` exists but is not a folder (checked before the model loads)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir}: exists and is not a folder; choose a folder name")


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
    engine: str = "torch",
    batch_size: int = 1,
    num_workers: int | None = None,
    background_writes: bool = True,
) -> PredictionRun:
    """`fcnseg predict` as a function: the inputs, the files written and the inputs that failed.

    Inputs are files, folders and glob patterns (see collect_inputs), checked before the model
    is loaded; the model comes from exactly one of weights / checkpoint / run, and `mode` /
    `options` default to the inference its weights recommend (see inference_settings). A bad
    input is skipped and reported (see predict_files); the caller decides the exit status.
    `engine` picks what runs the model (fcnseg.inference.engines.resolve_engine); batch_size,
    num_workers and background_writes are predict_files' speed options.

    Under torchrun (WORLD_SIZE > 1) rank r predicts inputs i with i % world == r, under the
    output names of all inputs, so every input is written exactly once; the counts are summed
    over the ranks (`report.counts()`) and only rank 0 should print them.
    """
    from fcnseg.engine import distributed
    from fcnseg.engine.predict_loader import shard
    from fcnseg.inference.engines import resolve_engine

    torch_device = resolve_device(device)
    with distributed.process_group(torch_device.type):
        out_dir = Path(out_dir)
        check_output_folder(out_dir)
        files = collect_inputs(inputs)
        model, meta = load_trained_model(weights, checkpoint, run)
        mode, options = inference_settings(meta, mode, options or {})
        resolved = resolve_engine(
            model.to(torch_device), meta["source"], engine, device=torch_device
        )
        names, mirrored_from = output_names(files)
        rank, world = distributed.rank(), distributed.world_size()
        report = PredictionRun(files=files, mirrored_from=mirrored_from, engine=resolved, rank=rank)
        predict_files(
            resolved.runnable,
            meta,
            shard(files, rank, world),
            out_dir,
            torch_device,
            mode=mode,
            options=options,
            overlay=overlay,
            progress=progress and rank == 0,
            report=report,
            batch_size=batch_size,
            num_workers=num_workers,
            background_writes=background_writes,
            names=names,
        )
        if world > 1:
            counts = torch.tensor([len(report.written), len(report.failed)], dtype=torch.int64)
            counts = counts.to(torch_device if torch_device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(counts)
            report.world_counts = (int(counts[0]), int(counts[1]))
    return report
