"""The shipped CamVid model's val mean IU on a merged-class problem, without training.

Why: the README's "New classes from a trained model" example fine-tunes the shipped 11-class
model on CamVid merged into fewer classes (configs/camvid3_transfer.yaml). The reference it is
compared with is the shipped model itself, its 11-class labels mapped through the same
`data.class_map`: what the trained model already knows about the new classes before any
fine-tuning. Scored like `fcnseg eval` (mode whole, full 360x480, void ignored).

    PYTHONPATH=src python benchmarks/camvid3_reference.py \
        --weights weights/camvid_fcn4s_lite0_fast.safetensors \
        --recipe configs/camvid3_transfer.yaml --data-root /work/shared/data/camvid
"""

from __future__ import annotations

import argparse
import json

import torch

from fcnseg.config import load_config
from fcnseg.engine.evaluate import scores_json
from fcnseg.engine.loading import load_model
from fcnseg.engine.setup import build_eval_dataset
from fcnseg.metrics import ConfusionMatrix


def label_lookup(
    source: tuple[str, ...], targets: tuple[str, ...], class_map: dict
) -> torch.Tensor:
    """Source class id -> target class id (classes the map does not name keep their name)."""
    return torch.tensor([targets.index(class_map.get(name, name)) for name in source])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--recipe", required=True, help="the recipe whose data.class_map to use")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = load_config(args.recipe)
    loaded = load_model(weights=args.weights)
    model = loaded.model.eval()
    dataset = build_eval_dataset(
        config.data.format,
        args.data_root,
        args.split,
        {"class_map": config.data.class_map},
        normalization=model.normalization,
    )
    source_classes = tuple(loaded.metadata.classes)
    lookup = label_lookup(source_classes, tuple(dataset.classes), config.data.class_map)
    matrix = ConfusionMatrix(len(dataset.classes), dataset.ignore_index)
    with torch.inference_mode():
        for index in range(len(dataset)):
            image, mask = dataset[index]
            labels = model(image.unsqueeze(0)).argmax(1)[0]
            matrix.update(lookup[labels], mask)
    result = scores_json(matrix.scores(), list(dataset.classes))
    print(json.dumps({"weights": args.weights, "split": args.split, **result}, indent=1))


if __name__ == "__main__":
    main()
