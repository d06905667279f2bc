"""Writers of tiny labelling-tool exports (COCO, LabelMe, CVAT, Label Studio, colour masks).

Every scene is S x S pixels: a "road" over the bottom half and a "car" square inside it, drawn
in the image too (grey sky, purple road, red car), so a tiny model can learn it in a few steps
and the tests know each mask exactly: `expected_mask(background=0, road=1, car=2)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

S = 32
ROAD = (slice(S // 2, S), slice(0, S))  # rows, cols
CAR = (slice(20, 28), slice(8, 16))
COLOURS = {"background": (90, 90, 90), "road": (128, 64, 128), "car": (200, 20, 20)}


def scene(seed: int = 0) -> np.ndarray:
    """The S x S x 3 uint8 image of the scene, with a little noise per seed."""
    image = np.zeros((S, S, 3), np.uint8)
    image[:] = COLOURS["background"]
    image[ROAD] = COLOURS["road"]
    image[CAR] = COLOURS["car"]
    noise = np.random.default_rng(seed).integers(0, 8, image.shape)
    return (image.astype(np.int64) + noise).clip(0, 255).astype(np.uint8)


def expected_mask(background: int = 0, road: int = 1, car: int = 2) -> np.ndarray:
    mask = np.full((S, S), background, np.int64)
    mask[ROAD] = road
    mask[CAR] = car
    return mask


def save_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene(seed)).save(path)


def _box_polygon(rows: slice, cols: slice) -> list[float]:
    """A polygon covering exactly the pixels rows x cols (pixel edges at integer coords)."""
    top, bottom, left, right = rows.start, rows.stop, cols.start, cols.stop
    return [left, top, right, top, right, bottom, left, bottom]


def rle_counts(region: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of a boolean mask: run lengths in column-major order, starting
    with a run of zeros."""
    flat = region.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


def write_coco(root: Path, splits=("train", "val"), per_split: int = 3) -> None:
    """COCO layout: categories listed out of id order (car id 7, road id 3), road as an RLE,
    the car as a polygon (smaller, so it wins the overlap), a crowd box in the top-left."""
    road = np.zeros((S, S), bool)
    road[ROAD] = True
    for split in splits:
        images, annotations = [], []
        for i in range(per_split):
            name = f"{split}_{i}.png"
            save_image(root / "images" / split / name, seed=i)
            images.append({"id": 100 + i, "file_name": name, "height": S, "width": S})
            annotations += [
                {"id": 10 * i + 1, "image_id": 100 + i, "category_id": 7, "iscrowd": 0,
                 "segmentation": [_box_polygon(*CAR)]},
                {"id": 10 * i + 2, "image_id": 100 + i, "category_id": 3, "iscrowd": 0,
                 "segmentation": {"size": [S, S], "counts": rle_counts(road)}},
                {"id": 10 * i + 3, "image_id": 100 + i, "category_id": 3, "iscrowd": 1,
                 "segmentation": [_box_polygon(slice(0, 4), slice(0, 4))]},
            ]  # fmt: skip
        data = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "road"}],
        }
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


def labelme_shapes() -> list[dict]:
    """Road as a rectangle, then the car as a polygon drawn later (on top)."""
    rows, cols = ROAD
    car_rows, car_cols = CAR
    # LabelMe points are pixel centres' coordinates; PIL fills the polygon's pixels inclusive.
    road_box = [[cols.start, rows.start], [cols.stop - 1, rows.stop - 1]]
    car = [[car_cols.start, car_rows.start], [car_cols.stop - 1, car_rows.start],
           [car_cols.stop - 1, car_rows.stop - 1], [car_cols.start, car_rows.stop - 1]]  # fmt: skip
    return [
        {"label": "road", "points": road_box, "shape_type": "rectangle"},
        {"label": "car", "points": car, "shape_type": "polygon"},
    ]


def write_labelme(root: Path, splits=("train", "val"), per_split: int = 3) -> None:
    """LabelMe JSON beside each image in split folders, and labels.txt (labelme2voc style)."""
    for split in splits:
        for i in range(per_split):
            save_image(root / split / f"{split}_{i}.png", seed=i)
            data = {
                "version": "5.4.1",
                "shapes": labelme_shapes(),
                "imagePath": f"{split}_{i}.png",
                "imageData": None,
                "imageHeight": S,
                "imageWidth": S,
            }
            (root / split / f"{split}_{i}.json").write_text(json.dumps(data))
    (root / "labels.txt").write_text("__ignore__\n_background_\nroad\ncar\n")


def write_cvat(root: Path, per_split: int = 3) -> None:
    """CVAT "Segmentation mask 1.1": labelmap.txt, subset lists, JPEGImages, SegmentationClass."""
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::", "road:128,64,128::",
             "car:0,0,142::"]  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    palette = np.array([[0, 0, 0], [128, 64, 128], [0, 0, 142]], np.uint8)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split in ("train", "val"):
        names = [f"{split}_{i}" for i in range(per_split)]
        (lists / f"{split}.txt").write_text("\n".join(names) + "\n")
        for i, name in enumerate(names):
            save_image(root / "JPEGImages" / f"{name}.png", seed=i)
            (root / "SegmentationClass").mkdir(exist_ok=True)
            Image.fromarray(palette[expected_mask()]).save(
                root / "SegmentationClass" / f"{name}.png"
            )


def write_labelstudio(root: Path, tasks: int = 6) -> None:
    """Label Studio: JSON export (upload-prefixed image URLs), PNG brush masks, images/. Task 1
    also has an older annotation (id 1, all car) that must be ignored."""
    task_list = []
    for task in range(1, tasks + 1):
        stored = f"0a1b2c3{task}-street{task}.png"
        task_list.append({"id": task, "data": {"image": f"/data/upload/1/{stored}"}})
        save_image(root / "images" / f"street{task}.png", seed=task)
        annotation = 10 + task
        for label, region in (("road", ROAD), ("car", CAR)):
            brush = np.zeros((S, S), np.uint8)
            brush[region] = 255
            name = f"task-{task}-annotation-{annotation}-by-ann@example.com-tag-{label}-0.png"
            (root / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(brush).save(root / "masks" / name)
    old = np.full((S, S), 255, np.uint8)
    Image.fromarray(old).save(
        root / "masks" / "task-1-annotation-1-by-ann@example.com-tag-car-0.png"
    )
    (root / "tasks.json").write_text(json.dumps(task_list))


def write_colour_masks(root: Path, per_split: int = 3) -> None:
    """images/ + colour masks/ in split folders and palette.yaml (black is a listed void)."""
    palette = {"road": (128, 64, 128), "car": (0, 0, 142), "sky": (70, 130, 180)}
    colours = np.array([palette["sky"], palette["road"], palette["car"]], np.uint8)
    for split in ("train", "val"):
        for i in range(per_split):
            save_image(root / "images" / split / f"{split}_{i}.png", seed=i)
            mask = colours[expected_mask()]
            mask[0, 0] = (0, 0, 0)  # a void pixel
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / split / f"{split}_{i}.png")
    text = "".join(f"{name}: [{r}, {g}, {b}]\n" for name, (r, g, b) in palette.items())
    (root / "palette.yaml").write_text(text + "ignore: [[0, 0, 0]]\n")


WRITERS = {
    "coco": write_coco,
    "labelme": write_labelme,
    "cvat": write_cvat,
    "labelstudio": write_labelstudio,
    "colour_masks": write_colour_masks,
}
