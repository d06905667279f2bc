"""`fcnseg crf-search`: the dense CRF's parameters chosen on a validation split, as DeepLab did.

DeepLab fixed the smoothness kernel (w2 = 3, theta_gamma = 3) and 10 mean-field iterations and
cross-validated the appearance kernel (w1, theta_alpha, theta_beta) on 100 val images, first on
a coarse grid, then on finer steps around the best point (fcnseg.constants). Here every one of
the six values can be searched: a value given once is held fixed, a value given several times
is part of the grid and of the refinement (the candidates: fcnseg.inference.crf_grid).

Why the net runs once: the CRF changes only the post-processing, so each image's probabilities
are computed once (float16, to halve their memory) and every candidate re-runs only the CRF.
The search is bounded by `max_images` and `max_minutes`: the coarse grid is tried in a seeded
random order, so a search stopped by the clock has sampled the whole grid rather than one
corner, and the refinement gets the time the coarse grid left (at least a quarter of it).

The result goes into a copy of the weights, in a folder of the user's choosing: the input is
never written, and nothing is written outside that folder.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnseg.constants import DEEPLAB_CRF_SEARCH_IMAGES
from fcnseg.engine.progress import task_bar
from fcnseg.errors import OutputError, UsageError
from fcnseg.inference.crf_grid import coarse_candidates, grid_steps, refined_candidates, search_grid
from fcnseg.inference.crf_params import CrfParams
from fcnseg.io_utils import atomic_write
from fcnseg.metrics import ConfusionMatrix
from fcnseg.paths import safe_name

#: Share of `max_minutes` the refinement keeps even when the coarse grid could use it all.
REFINE_SHARE = 0.25


@dataclass
class Sample:
    """One validation image as the search needs it: colours, the net's probabilities, labels."""

    image: np.ndarray  # H x W x 3 uint8
    probs: np.ndarray  # C x H x W float16
    target: np.ndarray  # H x W int64


@dataclass
class Trial:
    """One candidate's score on the search images."""

    params: CrfParams
    mean_iu: float
    seconds: float
    stage: str

    def as_json(self) -> dict[str, Any]:
        return {
            **self.params.as_dict(),
            "mean_iu": self.mean_iu,
            "seconds": round(self.seconds, 3),
            "stage": self.stage,
        }


@dataclass
class SearchResult:
    """What `run_crf_search` found and wrote."""

    best: CrfParams
    mean_iu_before: float
    mean_iu_after: float
    images: int
    trials: list[Trial] = field(default_factory=list)
    #: Candidates of the coarse grid (tried or not) and whether the clock stopped the search.
    grid_size: int = 0
    stopped_by_time: bool = False
    weights_out: Path | None = None
    log_out: Path | None = None

    def ms_per_image(self) -> float:
        """The best candidate's CRF time per image."""
        trial = next(t for t in self.trials if t.params == self.best)
        return 1000 * trial.seconds / max(1, self.images)


def score_params(
    samples: Sequence[Sample], params: CrfParams | None, num_classes: int, ignore: int | None
) -> float:
    """Mean IU of the CRF with `params` (None: the net alone) over `samples`."""
    from fcnseg.inference.crf import crf_refine

    confusion = ConfusionMatrix(num_classes, ignore)
    for sample in samples:
        if params is None:
            predicted = sample.probs.argmax(0)
        else:
            probs = sample.probs.astype(np.float32)
            predicted = crf_refine(sample.image, probs, **params.kernel_options()).argmax(0)
        confusion.update(torch.from_numpy(predicted), torch.from_numpy(sample.target))
    return float(confusion.scores().mean_iu)


def collect_samples(session: Any, dataset: Any, count: int, bar: Any = None) -> list[Sample]:
    """The first `count` images of `dataset` with the session's probabilities (one forward
    each). A label map of another size than its image is resized to it (nearest)."""
    from fcnseg.inference.crf import uint8_images
    from fcnseg.models.protocol import PRIMARY_HEAD, is_multi_head

    numbers = session.metadata.input_normalization()
    samples = []
    with torch.no_grad():
        for index in range(min(count, len(dataset))):
            image, target = dataset[index]
            if is_multi_head(target):
                target = target[PRIMARY_HEAD]
            batch = image[None].to(session.device)
            logits = session.logits(batch).float()
            size = image.shape[-2:]
            if logits.shape[-2:] != size:
                logits = torch.nn.functional.interpolate(
                    logits, size=size, mode="bilinear", align_corners=False
                )
            if target.shape[-2:] != size:
                target = torch.nn.functional.interpolate(
                    target[None, None].float(), size=size, mode="nearest"
                )[0, 0]
            samples.append(
                Sample(
                    image=uint8_images(batch, numbers)[0].permute(1, 2, 0).numpy().copy(),
                    probs=torch.softmax(logits, 1)[0].cpu().numpy().astype(np.float16),
                    target=target.long().numpy(),
                )
            )
            if bar is not None:
                bar.update(1)
    return samples


def output_paths(weights: Path, out_dir: Path, force: bool) -> tuple[Path, Path]:
    """(the weights copy, the search log) under `out_dir`, refused in one line when they are
    the input or exist already (unless `force`), or when `out_dir` is a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir}: exists and is not a folder; pass a folder")
    stem = safe_name(weights.stem, "weights")
    copy, log = out_dir / f"{stem}-crf.safetensors", out_dir / f"{stem}-crf-search.json"
    for path in (copy, log):
        if path.resolve() == weights.resolve():
            raise OutputError(f"--out {out_dir}: would overwrite the input {weights}")
        if (path.exists() or path.is_symlink()) and not force:
            raise OutputError(
                f"--out {out_dir}: {path.name} exists; choose another folder or pass --force"
            )
    return copy, log


@dataclass
class SearchBudget:
    """The clock of one search: a deadline for the coarse grid and one for everything."""

    max_minutes: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.started + 60 * self.max_minutes - time.monotonic()

    def coarse_left(self) -> float:
        return self.left() - REFINE_SHARE * 60 * self.max_minutes


def run_crf_search(
    *,
    weights: str | Path,
    out_dir: str | Path,
    data_format: str | None = None,
    data_root: str | None = None,
    split: str | None = "val",
    device: str = "auto",
    mode: str | None = None,
    options: dict[str, Any] | None = None,
    grid_values: Mapping[str, Sequence[float]] | None = None,
    max_images: int = DEEPLAB_CRF_SEARCH_IMAGES,
    max_minutes: float = 60.0,
    refine_rounds: int = 1,
    force: bool = False,
    progress: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> SearchResult:
    """Search the CRF parameters of `weights` on a split; write a copy of the weights storing
    the best as their default CRF ("crf", with "crf_search" saying how it was found) and a JSON
    log of every candidate, both under `out_dir`. See the module doc for the procedure."""
    _check_bounds(max_images, max_minutes, refine_rounds)
    weights = Path(weights)
    copy, log = output_paths(weights, Path(out_dir), force)
    grid = search_grid(grid_values)
    budget = SearchBudget(max_minutes)
    split_data = (data_format, data_root, split)
    samples, labels, where = _prepare(
        weights, device, mode, options, split_data, max_images, progress
    )
    before = score_params(samples, None, *labels)
    say(f"net alone: mean IU {100 * before:.2f} on {len(samples)} {where['split']} images")
    coarse = coarse_candidates(grid)
    result = SearchResult(CrfParams(), before, before, len(samples), grid_size=len(coarse))
    _try_all(coarse, "coarse", samples, labels, result, budget.coarse_left, progress)
    steps = grid_steps(grid)
    for round_index in range(refine_rounds):
        if not steps or budget.left() <= 0 or not result.trials:
            break
        tried = {trial.params for trial in result.trials}
        candidates = refined_candidates(result.best, steps, tried)
        stage = f"refine {round_index + 1}"
        _try_all(candidates, stage, samples, labels, result, budget.left, progress)
        steps = {name: step / 2 for name, step in steps.items()}
    if not result.trials:
        raise UsageError(
            f"--max-minutes {max_minutes:g}: no candidate could be tried in that time (the net "
            "alone took it); allow more minutes or fewer --max-images"
        )
    _write_outputs(weights, copy, log, result, where)
    return result


def _check_bounds(max_images: int, max_minutes: float, refine_rounds: int) -> None:
    if max_images < 1:
        raise UsageError(f"--max-images {max_images}: must be 1 or more")
    if not (math.isfinite(max_minutes) and max_minutes > 0):
        raise UsageError(f"--max-minutes {max_minutes}: must be a number above 0")
    if refine_rounds < 0:
        raise UsageError(f"--refine-rounds {refine_rounds}: must be 0 or more")


def _prepare(
    weights: Path,
    device: str,
    mode: str | None,
    options: dict[str, Any] | None,
    split_data: tuple[str | None, str | None, str | None],
    max_images: int,
    progress: bool,
) -> tuple[list[Sample], tuple[int, int | None], dict[str, str]]:
    """(the search images with the net's probabilities, (classes, ignore label), {format,
    split}): the model loaded and checked able to run the CRF, the split found as eval finds it."""
    from fcnseg.engine.device import resolve_device
    from fcnseg.engine.loading import load_model
    from fcnseg.engine.run_eval import eval_split
    from fcnseg.engine.session import InferenceSession, check_crf_usable, choose_spec

    torch_device = resolve_device(device)
    loaded = load_model(weights, None, None)
    check_crf_usable(loaded, "fcnseg crf-search")
    spec = choose_spec(loaded.metadata, mode, options)
    data_format, data_root, split = split_data
    dataset, data_format, split = eval_split(
        loaded, data_format=data_format, data_root=data_root, split=split
    )
    session = InferenceSession.start(loaded, spec, device=torch_device)
    count = min(max_images, len(dataset))
    if count == 0:
        raise UsageError(f"split {split!r} of {data_format} has no images to search on")
    with task_bar(count, "crf-search: net", progress) as bar:
        samples = collect_samples(session, dataset, count, bar)
    labels = (int(dataset.num_classes), dataset.ignore_index)
    return samples, labels, {"format": data_format, "split": split}


def _write_outputs(
    weights: Path, copy: Path, log: Path, result: SearchResult, where: dict[str, str]
) -> None:
    """The weights copy with "crf" (the best) and "crf_search" (how), and the JSON log."""
    from fcnseg.engine.checkpoint import load_weights, write_weights

    tensors, metadata = load_weights(weights)
    record = {
        **where,
        "images": result.images,
        "mean_iu_before": result.mean_iu_before,
        "mean_iu_after": result.mean_iu_after,
        "candidates_tried": len(result.trials),
        "stopped_by_time": result.stopped_by_time,
        "source": weights.name,
    }
    entries = {"crf": result.best.as_dict(), "crf_search": record}
    write_weights(copy, tensors, {**metadata.as_dict(), **entries})
    trials = [trial.as_json() for trial in result.trials]
    text = json.dumps({**record, "best": result.best.as_dict(), "trials": trials}, indent=2)
    atomic_write(log, lambda tmp: tmp.write_text(text + "\n"))
    result.weights_out, result.log_out = copy, log


def _try_all(
    candidates: list[CrfParams],
    stage: str,
    samples: Sequence[Sample],
    labels: tuple[int, int | None],
    result: SearchResult,
    seconds_left: Callable[[], float],
    progress: bool,
) -> None:
    """Score `candidates` in order until done or `seconds_left()` runs out; keep the best."""
    with task_bar(len(candidates), f"crf-search: {stage}", progress) as bar:
        for params in candidates:
            if seconds_left() <= 0:
                result.stopped_by_time = True
                return
            started = time.perf_counter()
            mean_iu = score_params(samples, params, *labels)
            trial = Trial(params, mean_iu, time.perf_counter() - started, stage)
            result.trials.append(trial)
            if len(result.trials) == 1 or mean_iu > result.mean_iu_after:
                result.best, result.mean_iu_after = params, mean_iu
            if bar is not None:
                bar.update(1)
                bar.set_postfix(best=f"{100 * result.mean_iu_after:.2f}")


__all__ = ["SearchResult", "run_crf_search"]
