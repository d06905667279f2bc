"""`fcnseg eval` as a function: a trained model scored on a dataset split, scores written as JSON.

The command line only parses arguments and prints; `run_evaluation` does the work, so the demo,
scripts and the CLI evaluate the same way. The split is found from the arguments first, then from
the recipe stored with the model (its dataset format, root, validation split and options), so
`fcnseg eval --run RUN` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader

from fcnseg.config import eval_options
from fcnseg.data.roots import resolve_data_root
from fcnseg.engine.checkpoint import check_num_classes
from fcnseg.engine.device import resolve_device
from fcnseg.engine.evaluate import (
    eval_loader,
    evaluate_heads,
    format_scores,
    scores_json,
    write_scores,
)
from fcnseg.engine.loading import LoadedModel, load_model
from fcnseg.engine.session import InferenceSession, choose_spec, session_crf
from fcnseg.engine.setup import build_eval_dataset
from fcnseg.engine.trimap_eval import format_trimap, trimap_json
from fcnseg.errors import OutputError, UsageError, WeightsError
from fcnseg.inference.mc_dropout import DEFAULT_SEED
from fcnseg.inference.mc_dropout import check_request as check_mc_request
from fcnseg.metrics import SegmentationScores, TrimapScores
from fcnseg.models.protocol import primary_head_name
from fcnseg.paths import safe_name


@dataclass
class EvalRun:
    """What `run_evaluation` scored and wrote."""

    #: The model, its metadata, inference and runtime.
    session: InferenceSession
    dataset: Any
    data_format: str
    split: str
    #: Scores per output head ("semantic" only for single-head models).
    per_head: dict[str, SegmentationScores]
    primary: str
    #: The JSON written to `out`.
    payload: dict[str, Any]
    out: Path

    @property
    def model(self) -> nn.Module:
        return self.session.loaded.model

    @property
    def meta(self) -> dict[str, Any]:
        """The metadata with its source and recipe, as the HTML report lists them."""
        return self.session.loaded.as_dict()

    def report(self) -> str:
        """The tables `fcnseg eval` prints: the primary head's, then any other head's, then the
        trimap scores when asked for."""
        parts = [format_scores(self.per_head[self.primary], self.dataset.classes)]
        for head, scores in self.per_head.items():
            if head != self.primary:
                parts.append(f"\n[{head} head]\n" + format_scores(scores, self.head_classes(head)))
        if "trimap" in self.payload:
            parts.append("\n" + format_trimap(self.payload["trimap"]))
        return "\n".join(parts)

    def head_classes(self, head: str) -> list[str]:
        """Class names of a head (multi-head datasets describe each; else the indices)."""
        info = getattr(self.dataset, "head_class_info", {}).get(head)
        count = len(self.per_head[head].per_class_iu)
        return list(info.names) if info else [str(i) for i in range(count)]


def eval_split(
    loaded: LoadedModel,
    *,
    data_format: str | None = None,
    data_root: str | None = None,
    split: str | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[Any, str, str]:
    """(dataset, format, split) to score the `loaded` model on.

    Each of format, root and split is the argument when given, else the recipe stored with the
    model; the recipe's dataset options apply only to its own format. The evaluation transform
    uses the model's normalisation, after an optional resize to `size`.
    """
    recipe = (loaded.recipe or {}).get("data", {})
    data_format = data_format or loaded.metadata.data_format or recipe.get("format")
    if not data_format:
        raise UsageError("--format: the weights do not say which dataset format; pass --format")
    root = data_root if data_root is not None else recipe.get("root")
    if data_root is not None and not Path(data_root).exists():
        raise FileNotFoundError(f"--data-root {data_root}: directory not found; fix the path")
    root = resolve_data_root(root)
    if root is not None and not Path(root).exists():
        raise FileNotFoundError(f"dataset root {root}: directory not found; pass --data-root")
    split = split or recipe.get("val_split") or "val"
    if not isinstance(split, str) or not isinstance(data_format, str):
        raise WeightsError(
            f"{loaded.source or 'weights'}: stored dataset format/split are not strings; "
            "pass --format and --split"
        )
    options = eval_options(recipe) if data_format == recipe.get("format") else {}
    stored_map = loaded.metadata.class_map
    if stored_map and "class_map" not in options and data_format == loaded.metadata.data_format:
        # Trained with data.class_map: score on the same merged classes (weights carry the map).
        options = {**options, "class_map": dict(stored_map)}
    dataset = build_eval_dataset(
        data_format,
        root,
        split,
        options,
        normalization=loaded.metadata.input_normalization(),
        size=size,
        channels=int(loaded.model.in_channels),
    )
    return dataset, data_format, split


def default_scores_path(run: str | Path | None, data_format: str, split: str) -> Path:
    """`<run or .>/eval-<format>-<split>.json` with both names made safe file-name parts.

    Why: format and split may come from the weights file's metadata (its stored recipe), which
    must never decide where a file is written; `../` in a stored split once put the JSON outside
    the run directory.
    """
    name = f"eval-{safe_name(data_format, 'data')}-{safe_name(split, 'split')}.json"
    return Path(run or ".") / name


def check_report_folder(report_dir: str | Path | None, force: bool = False) -> None:
    """OutputError when `--report DIR` is a file, or a folder that holds anything and `force`
    is not given; checked before the model loads, so nothing is scored for nothing.

    Why: the report writes index.html and its PNGs under fixed names; a user's own index.html
    in DIR was once replaced without a word. An empty or missing folder is fine; `--force`
    allows replacing the report's own files (other files in DIR are left alone).
    """
    if report_dir is None:
        return
    folder = Path(report_dir)
    if folder.is_symlink() and not folder.exists():
        raise OutputError(f"--report {folder}: is a broken symbolic link; remove it")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--report {folder}: exists and is not a folder; pass a folder")
    if folder.is_dir() and not force and any(folder.iterdir()):
        raise OutputError(
            f"--report {folder}: folder is not empty (its index.html and PNGs would be "
            "replaced); choose an empty or new folder, or pass --force"
        )


def _score(
    session: InferenceSession,
    loader: DataLoader,
    dataset: Any,
    progress: bool,
    on_batch: Callable[[Tensor, Tensor], None] | None,
) -> dict[str, SegmentationScores]:
    """Scores per head of the session's model on `loader`, with the session's inference and
    its dense CRF, if any (on the images behind the normalised batches)."""
    refine = None
    if session.crf is not None:
        from fcnseg.inference.crf import refine_logits, uint8_images

        crf, numbers = session.crf, session.metadata.input_normalization()

        def refine(images: Tensor, logits: Tensor) -> Tensor:
            return refine_logits(uint8_images(images, numbers), logits, crf, session.crf_timer)

    return evaluate_heads(
        session.predictor,
        loader,
        dataset.num_classes,
        dataset.ignore_index,
        session.device,
        mode=session.spec.mode,
        options=session.spec.options(),
        progress=progress,
        on_batch=on_batch,
        forward=session.head_logits,
        refine=refine,
    )


def _payload(result: EvalRun) -> dict[str, Any]:
    """The scores JSON: what was scored how, the primary head's scores, and every head's for
    multi-head models (SIFT Flow), by head name."""
    session = result.session
    payload = {
        "source": str(session.loaded.source),
        "format": result.data_format,
        "split": result.split,
        "images": len(result.dataset),
        "mode": session.spec.mode,
        "inference_options": session.spec.options(),
        "engine": session.runtime.name,
        "engine_details": session.runtime.as_json(),
        "crf": session.crf.as_dict() if session.crf is not None else None,
        "crf_ms_per_image": session.crf_timer.ms_per_image(),
        **scores_json(result.per_head[result.primary], result.dataset.classes),
    }
    if session.mc is not None:
        payload["mc_dropout"] = session.mc.as_json()
    if len(result.per_head) > 1:
        payload["heads"] = {
            head: scores_json(scores, result.head_classes(head))
            for head, scores in result.per_head.items()
        }
    return payload


Hook = Callable[[Tensor, Tensor], None]


def _both(first: Hook | None, second: Hook | None) -> Hook | None:
    """One per-batch hook calling `first`, then `second` (either may be None)."""
    if first is None or second is None:
        return first or second

    def hook(predicted: Tensor, target: Tensor) -> None:
        first(predicted, target)
        second(predicted, target)

    return hook


def _trimap_counter(
    dataset: Any, widths: tuple[int, ...] | None, device: Any
) -> TrimapScores | None:
    """The band counter (it sees every batch after the caller's hook), None when not asked."""
    if not widths:
        return None
    return TrimapScores(dataset.num_classes, dataset.ignore_index, widths, device)


def _trimap_entry(bands: TrimapScores | None) -> dict[str, Any]:
    """{"trimap": ...} of the JSON (summed over ranks first), or nothing when not asked for."""
    if bands is None:
        return {}
    bands.reduce_()
    return {"trimap": trimap_json(bands)}


# size: one call per step; the inference options (MC dropout --mc-samples/--seed) add lines
def run_evaluation(
    *,
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    run: str | Path | None = None,
    device: str = "auto",
    mode: str | None = None,
    options: dict[str, Any] | None = None,
    data_format: str | None = None,
    data_root: str | None = None,
    split: str | None = None,
    size: tuple[int, int] | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    batch_hook: Callable[[Any, DataLoader], Callable[[Tensor, Tensor], None]] | None = None,
    payload_extras: Callable[[EvalRun], dict[str, Any]] | None = None,
    engine: str = "torch",
    trimap: tuple[int, ...] | None = None,
    mc_samples: int | None = None,
    seed: int = DEFAULT_SEED,
    crf: bool | None = None,
    crf_options: dict[str, Any] | None = None,
) -> EvalRun:
    """Score the model from exactly one of weights / checkpoint / run on a split; write the JSON.

    `mode`/`options`: the inference (None: what the weights recommend, see
    inference.session.choose_spec). `out` defaults to `<run>/eval-<format>-<split>.json`, or the
    current directory when the model is not a run directory. `batch_hook(dataset, loader)`
    returns a callback that sees every batch's predicted ids and targets (evaluate_heads'
    on_batch; the HTML report of `fcnseg eval --report` uses it); `payload_extras(result)` adds
    fields to the JSON before its one write (the report's confusion matrix and per-image IU).
    `engine`: the runtime, "torch", "onnxruntime", "onnxruntime-int8" or "auto"
    (fcnseg.inference.runtimes; the graph is cached beside the weights); the one used is in the
    JSON's "engine". The split is checked before the runtime is resolved (an export takes time).
    `trimap`: band widths in pixels; the primary head's scores within each band around the
    ground truth's label boundaries go to the JSON's "trimap" (engine/trimap_eval.py).
    `mc_samples`/`seed`: MC dropout (InferenceSession.start), checked before the split is read.
    `crf`/`crf_options`: --crf, --no-crf, --crf-* (session_crf).
    """
    torch_device = resolve_device(device, engine)
    loaded = load_model(weights, checkpoint, run)
    spec = choose_spec(loaded.metadata, mode, options)
    check_mc_request(mc_samples, seed, engine, loaded.model, loaded.metadata.model)
    crf_params = session_crf(loaded, crf, crf_options)
    dataset, data_format, split = eval_split(
        loaded, data_format=data_format, data_root=data_root, split=split, size=size
    )
    check_num_classes(loaded.source, loaded.metadata.num_classes, dataset.num_classes)
    started = InferenceSession.start(
        loaded, spec, runtime=engine, device=torch_device, mc_samples=mc_samples, seed=seed
    )
    session = started.with_crf(crf_params)
    loader = eval_loader(dataset)
    on_batch = batch_hook(dataset, loader) if batch_hook is not None else None
    bands = _trimap_counter(dataset, trimap, session.device)
    per_head = _score(session, loader, dataset, progress, _both(on_batch, bands))
    result = EvalRun(
        session=session,
        dataset=dataset,
        data_format=data_format,
        split=split,
        per_head=per_head,
        primary=primary_head_name(per_head),
        payload={},
        out=Path(out) if out else default_scores_path(run, data_format, split),
    )
    result.payload = {**_payload(result), **_trimap_entry(bands)}
    if payload_extras is not None:
        result.payload.update(payload_extras(result))
    write_scores(result.out, result.payload)
    return result
