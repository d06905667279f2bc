"""The `fcnseg models` table: parameters, GFLOPs and offline weights of every registered name.

Kept apart from the registry and the factory because it is a report about models (it builds
each one on the meta device and counts FLOPs), not something building a model needs.

Why a shipped table: building all the models to list them took about 2 minutes on a loaded
2-core CPU, so `fcnseg models` reads their costs from `model_table.json` (written by
`python -m fcnseg.models.table`, checked against a rebuild by tests/test_models_table.py) and
builds only a name the table lacks.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fcnseg.models.factory import build_model, list_models, model_info

#: Input side (pixels) at which `model_table` reports GFLOPs: a common segmentation crop.
TABLE_FLOPS_SIZE: int = 512
#: Classes of the models built for the table (PASCAL VOC's 21, the paper's main benchmark).
TABLE_NUM_CLASSES: int = 21
#: The precomputed costs of every registered model, shipped in the package.
SHIPPED_TABLE: Path = Path(__file__).with_name("model_table.json")
#: Decimals of GFLOPs kept in the shipped table (the listing prints one).
GFLOPS_DECIMALS: int = 3


@dataclass(frozen=True)
class ModelRow:
    """One row of `fcnseg models`: cost figures and whether ImageNet weights are installed."""

    name: str
    family: str
    description: str
    #: Trainable parameters (frozen bilinear upsampling kernels are not counted).
    parameters: int
    #: Forward GFLOPs at TABLE_FLOPS_SIZE^2, batch 1 (a multiply-add counts 2, as in
    #: torch.utils.flop_counter); None when not computed.
    gflops: float | None
    weights_offline: bool


@functools.cache
def _model_cost(name: str, size: int, with_flops: bool) -> tuple[int, float | None]:
    """Trainable parameters and GFLOPs of `name`, built on the meta device (no memory, no weights).

    The meta device makes even the 134M-parameter VGG FCNs cost a fraction of a second: shapes
    flow through the network, nothing is allocated or computed; results are cached per process.
    """
    import inspect

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    info = model_info(name)
    options: dict[str, Any] = {}
    parameters_of_builder = inspect.signature(info.builder).parameters.values()
    if any(
        p.name == "pretrained" or p.kind is inspect.Parameter.VAR_KEYWORD
        for p in parameters_of_builder
    ):
        options["pretrained"] = False  # no weight files are read for a cost estimate
    with torch.device("meta"):
        model = build_model(name, TABLE_NUM_CLASSES, **options).eval()
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if not with_flops:
            return parameters, None
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, model.in_channels, size, size))
    return parameters, counter.get_total_flops() / 1e9


def model_table(
    names: list[str] | None = None, flops: bool = True, size: int = TABLE_FLOPS_SIZE
) -> list[ModelRow]:
    """One row per registered model (or per name in `names`), for `fcnseg models`.

    `flops=False` skips the FLOP count (parameters only) for a faster listing.
    """
    rows = []
    for name in names if names is not None else list_models():
        info = model_info(name)
        parameters, gflops = _model_cost(name, size, flops)
        rows.append(
            ModelRow(
                name=name,
                family=info.family,
                description=info.description,
                parameters=parameters,
                gflops=gflops,
                weights_offline=bool(info.weights_available()),
            )
        )
    return rows


def shipped_costs(path: Path = SHIPPED_TABLE) -> dict[str, dict[str, Any]]:
    """name -> {"family", "description", "parameters", "gflops"} from the shipped table."""
    payload = json.loads(path.read_text())
    return {row["name"]: row for row in payload["models"]}


def listed_model_table(names: list[str] | None = None, flops: bool = True) -> list[ModelRow]:
    """`fcnseg models`: the registry's names and weights status, costs from the shipped table
    (a name missing from it, e.g. one registered since, is built on the meta device)."""
    costs = shipped_costs()
    rows = []
    for name in names if names is not None else list_models():
        if name not in costs:
            rows.extend(model_table([name], flops=flops))
            continue
        info = model_info(name)
        rows.append(
            ModelRow(
                name=name,
                family=info.family,
                description=info.description,
                parameters=int(costs[name]["parameters"]),
                gflops=costs[name]["gflops"] if flops else None,
                weights_offline=bool(info.weights_available()),
            )
        )
    return rows


def table_payload(rows: list[ModelRow]) -> dict[str, Any]:
    """The shipped table's JSON: costs of `rows` (not the machine-dependent weights status)."""
    models = []
    for row in rows:
        entry = asdict(row)
        del entry["weights_offline"]
        entry["gflops"] = round(row.gflops, GFLOPS_DECIMALS) if row.gflops is not None else None
        models.append(entry)
    return {
        "flops_input": [TABLE_FLOPS_SIZE, TABLE_FLOPS_SIZE],
        "num_classes": TABLE_NUM_CLASSES,
        "regenerate": "python -m fcnseg.models.table",
        "models": models,
    }


def format_model_table(rows: list[ModelRow]) -> str:
    """Plain-text table of `rows`: name, trainable Mparams, GFLOPs, offline weights, description."""
    header = f"{'model':<30} {'params(M)':>9} {'GFLOPs':>8} {'weights':>7}  description"
    lines = [header, "-" * len(header)]
    for row in rows:
        gflops = "-" if row.gflops is None else f"{row.gflops:.1f}"
        weights = "yes" if row.weights_offline else "no"
        lines.append(
            f"{row.name:<30} {row.parameters / 1e6:>9.2f} {gflops:>8} {weights:>7}  "
            f"{row.description}"
        )
    return "\n".join(lines)


def write_shipped_table(path: Path = SHIPPED_TABLE) -> Path:
    """Rebuild every registered model on the meta device and write the table (a minute or two)."""
    payload = table_payload(model_table())
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


if __name__ == "__main__":
    sys.stdout.write(f"wrote {write_shipped_table()}\n")
