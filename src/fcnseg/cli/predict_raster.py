"""`fcnseg predict --tiled`: the options and summary of predict's raster path.

Why a module of its own: the raster path (engine/predict_raster.py) takes other options and
prints other numbers (megapixels/s, peak memory) than predict's image path, and keeping them
here leaves `cli/predict.py` with a two-line hook.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from fcnseg.cli.arguments import inference_options


def add_raster_options(parser: argparse.ArgumentParser) -> None:
    """--tiled and --probs (the raster path; see docs/large_rasters.md)."""
    parser.add_argument(
        "--tiled",
        action="store_true",
        help="read TIFF inputs by window and write tiled TIFFs of labels (automatic for TIFFs "
        "over 100 Mpx); memory is bounded by tile height x image width",
    )
    parser.add_argument(
        "--probs",
        nargs="?",
        const="uint8",
        choices=("uint8", "float16"),
        help="with the raster path, also write <name>_probs.tif: per-class probabilities as "
        "uint8 (round(255 p), the default) or float16",
    )


def wants_raster(args: argparse.Namespace) -> bool:
    """Whether this predict command runs the raster path."""
    from fcnseg.engine.predict_raster import wants_raster as wanted

    return wanted(args.inputs, args.tiled or args.probs is not None)


def run_raster(args: argparse.Namespace) -> int:
    """Predict every input raster; print one line per raster and the peak memory."""
    from fcnseg.engine.predict_raster import peak_rss_bytes, run_raster_prediction

    bar = _progress_bar() if sys.stderr.isatty() else None
    result = run_raster_prediction(
        args.inputs,
        args.out,
        weights=args.weights,
        checkpoint=args.checkpoint,
        run=args.run,
        device=args.device,
        engine=args.engine,
        mode=args.mode,
        options=inference_options(args),
        probs=args.probs,
        progress=bar,
    )
    for item in result.results:
        outputs = ", ".join(str(path) for path in item.written)
        print(
            f"{item.source}: {item.width}x{item.height} -> {outputs} "
            f"({item.seconds:.1f} s, {item.megapixels_per_second:.2f} Mpx/s)"
        )
    print(f"tiles: {result.options}")
    print(result.runtime.summary())
    print(f"peak RSS {peak_rss_bytes() / 2**20:.0f} MiB")
    return 0


def _progress_bar() -> Callable[[int, int], None]:
    """A tqdm bar of rows done, restarted for each raster."""
    from tqdm import tqdm

    state: dict[str, object] = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None or bar.total != total or done < bar.n:  # type: ignore[attr-defined]
            if bar is not None:
                bar.close()  # type: ignore[attr-defined]
            bar = state["bar"] = tqdm(total=total, desc="rows", dynamic_ncols=True)
        bar.update(done - bar.n)  # type: ignore[attr-defined]
        if done >= total:
            bar.close()  # type: ignore[attr-defined]
            state.pop("bar")

    return update
