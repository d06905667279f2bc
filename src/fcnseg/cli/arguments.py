"""Argument groups several commands share: where the model comes from, how it is run.

Why a module of its own: eval, predict, export and serve take the same model source and
inference flags, and their spelling, defaults and help must not drift apart. Every choice list
comes from `fcnseg.choices`, which imports nothing heavy, so building the parser costs no torch.
"""

from __future__ import annotations

import argparse
from typing import Any

from fcnseg.choices import INFERENCE_MODES, RUNTIME_CHOICES


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """Exactly one of --weights / --checkpoint / --run names the model."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--weights", help="released weights (.safetensors with fcnseg metadata)")
    group.add_argument("--checkpoint", help="training checkpoint (.pt)")
    group.add_argument("--run", help="run directory written by `fcnseg train`")


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """--device, --mode and the mode's options (--tile-size, --scales)."""
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    parser.add_argument(
        "--mode",
        default=None,
        choices=INFERENCE_MODES,
        help="inference mode (default: the one the weights recommend, else whole)",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        nargs="+",
        help="sliding-window tile, or the output tile of --mode overlap_tile (H [W])",
    )
    parser.add_argument("--scales", type=float, nargs="+", help="multi-scale factors")


def add_mc_options(parser: argparse.ArgumentParser) -> None:
    """--mc-samples / --seed: Monte-Carlo dropout (fcnseg.inference.mc_dropout)."""
    parser.add_argument(
        "--mc-samples",
        type=int,
        default=None,
        metavar="N",
        help="Monte-Carlo dropout: N passes with the dropout layers on, probabilities averaged, "
        "plus a per-pixel uncertainty (entropy of the mean / log C); needs a net with dropout "
        "and --engine torch or auto",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the --mc-samples dropout masks (default 0)"
    )


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    """--engine: what runs the model (fcnseg.choices.RUNTIME_CHOICES)."""
    parser.add_argument(
        "--engine",
        default="torch",
        choices=RUNTIME_CHOICES,
        help="what runs the model: torch (default), auto (onnxruntime when installed and on the "
        "CPU, else torch), onnxruntime, onnxruntime-int8 (made by `export --int8`); the ONNX "
        "graph is exported and checked once and cached beside the weights "
        "(<weights>.onnx-cache/), the one write outside --out, which is why it is opt-in",
    )


def inference_options(args: argparse.Namespace) -> dict[str, Any]:
    """The mode options given on the command line (tile size, scales) as the library takes them."""
    options: dict[str, Any] = {}
    if args.tile_size:
        options["tile_size"] = (
            tuple(args.tile_size) if len(args.tile_size) > 1 else args.tile_size[0]
        )
    if args.scales:
        options["scales"] = tuple(args.scales)
    return options


#: The --crf-* flags: (flag suffix, CrfParams field, value type, help).
CRF_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("w1", "w1", float, "appearance (bilateral) kernel weight"),
    ("theta-alpha", "theta_alpha", float, "appearance kernel position width (pixels)"),
    ("theta-beta", "theta_beta", float, "appearance kernel colour width (RGB levels)"),
    ("w2", "w2", float, "smoothness kernel weight"),
    ("theta-gamma", "theta_gamma", float, "smoothness kernel width (pixels)"),
    ("iterations", "iterations", int, "mean-field iterations"),
)


def add_crf_options(parser: argparse.ArgumentParser) -> None:
    """--crf / --no-crf and the --crf-* parameters of the dense CRF after the net."""
    switch = parser.add_mutually_exclusive_group()
    switch.add_argument(
        "--crf",
        dest="crf",
        action="store_const",
        const=True,
        default=None,
        help="refine the scores with the fully connected CRF (needs the crf extra): the "
        "parameters stored in the weights (`fcnseg crf-search`), else DeepLab's defaults "
        "(w1 4, theta_alpha 67, theta_beta 3, w2 3, theta_gamma 3, 10 iterations)",
    )
    switch.add_argument(
        "--no-crf",
        dest="crf",
        action="store_const",
        const=False,
        help="no CRF, even when the weights store one as their default",
    )
    for flag, _, kind, text in CRF_FLAGS:
        parser.add_argument(f"--crf-{flag}", type=kind, default=None, metavar="V", help=text)


def crf_arguments(args: argparse.Namespace) -> tuple[bool | None, dict[str, Any]]:
    """(--crf True / --no-crf False / neither None, the --crf-* values given by field name)."""
    overrides = {
        name: getattr(args, f"crf_{flag.replace('-', '_')}")
        for flag, name, _, _ in CRF_FLAGS
        if getattr(args, f"crf_{flag.replace('-', '_')}") is not None
    }
    return args.crf, overrides
