"""Labelling-tool exports read as they are: COCO, LabelMe, CVAT, Label Studio, colour masks;
their class order, overlap and void rules, their one-line errors, and `data.class_map`."""

from __future__ import annotations

import base64
import io
import json
from importlib.util import find_spec

import numpy as np
import pytest
from annotation_fixtures import (
    CAR,
    ROAD,
    WRITERS,
    S,
    expected_mask,
    labelme_shapes,
    save_image,
    write_coco,
    write_colour_masks,
    write_cvat,
    write_labelme,
    write_labelstudio,
)
from PIL import Image

from fcnseg.data.check import check_dataset, format_report
from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.class_map import plan_class_map
from fcnseg.data.datasets.registry import build_dataset
from fcnseg.errors import RecipeError

#: The coco format needs pycocotools (the `formats` and `test` extras); the others do not.
needs_coco = pytest.mark.skipif(
    find_spec("pycocotools") is None, reason="pycocotools not installed (fcnseg[formats])"
)
FORMATS = [pytest.param(fmt, marks=needs_coco) if fmt == "coco" else fmt for fmt in sorted(WRITERS)]


def _mask(fmt, root, split="train", index=0, **options):
    return build_dataset(fmt, root, split, **options).load(index)[1].numpy()


# ---------------------------------------------------------------------------------- COCO
@needs_coco
def test_coco_classes_by_category_id_smaller_wins_crowd_is_void(tmp_path):
    write_coco(tmp_path)
    dataset = build_dataset("coco", tmp_path, "train")
    # categories listed car (7), road (3): sorted by id -> road 1, car 2, after background 0
    assert dataset.classes == ("background", "road", "car")
    expected = expected_mask()
    expected[:4, :4] = 255  # the crowd box
    assert (dataset.load(0)[1].numpy() == expected).all()
    assert len(dataset) == 3 and dataset.sample_name(2) == "train_2"


@needs_coco
def test_coco_compressed_rle_and_no_background_class(tmp_path):
    from pycocotools import mask as coco_mask

    write_coco(tmp_path, splits=("val",), per_split=1)
    path = tmp_path / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    car = np.zeros((S, S), np.uint8, order="F")
    car[CAR] = 1
    rle = coco_mask.encode(np.asfortranarray(car))
    data["annotations"][0]["segmentation"] = {"size": [S, S], "counts": rle["counts"].decode()}
    path.write_text(json.dumps(data))
    dataset = build_dataset("coco", tmp_path, "val", background=False)
    assert dataset.classes == ("road", "car")
    expected = expected_mask(background=255, road=0, car=1)
    expected[:4, :4] = 255
    assert (dataset.load(0)[1].numpy() == expected).all()


@needs_coco
def test_coco_errors_are_one_line_naming_the_file(tmp_path):
    write_coco(tmp_path, splits=("train",), per_split=1)
    with pytest.raises(DataError, match=r"instances_val\.json: annotation file of split 'val'"):
        build_dataset("coco", tmp_path, "val")
    path = tmp_path / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotation 1 has category_id 99") as error:
        build_dataset("coco", tmp_path, "train").load(0)
    assert "\n" not in str(error.value)
    data["images"][0]["file_name"] = "../../etc/passwd"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"not found under images/train/"):
        build_dataset("coco", tmp_path, "train")


# ------------------------------------------------------------------------------- LabelMe
def test_labelme_split_folders_class_list_and_later_shape_wins(tmp_path):
    write_labelme(tmp_path)
    dataset = build_dataset("labelme", tmp_path, "val")
    assert dataset.classes == ("_background_", "road", "car")  # __ignore__ dropped
    assert (dataset.load(1)[1].numpy() == expected_mask()).all()
    # the road drawn after the car covers it: later shapes win
    path = tmp_path / "val" / "val_1.json"
    data = json.loads(path.read_text())
    data["shapes"] = data["shapes"][::-1]
    path.write_text(json.dumps(data))
    assert (dataset.load(1)[1].numpy() == expected_mask(car=1)).all()


def test_labelme_circle_ignore_label_embedded_image_flat_split(tmp_path):
    buffer = io.BytesIO()
    save_image(tmp_path / "x.png")
    Image.open(tmp_path / "x.png").save(buffer, format="PNG")
    (tmp_path / "x.png").unlink()
    shapes = [
        {"label": "__ignore__", "points": [[0, 0], [3, 3]], "shape_type": "rectangle"},
        {"label": "ball", "points": [[20, 10], [23, 10]], "shape_type": "circle"},
        {"label": "ball", "points": [[1, 1], [5, 5]], "shape_type": "line"},
    ]
    for stem in ("a", "b", "c", "d", "e"):
        data = {"shapes": shapes, "imagePath": "x.png", "imageData": None}
        data["imageData"] = base64.b64encode(buffer.getvalue()).decode()
        (tmp_path / f"{stem}.json").write_text(json.dumps(data))
    train = build_dataset("labelme", tmp_path, "train")
    val = build_dataset("labelme", tmp_path, "val")
    assert len(train) + len(val) == 5 and len(val) == 1
    assert train.classes == ("background", "ball")  # no class list: background + sorted labels
    mask = train.load(0)[1].numpy()
    assert (mask[:4, :4] == 255).all() and mask[10, 20] == 1 and mask[10, 23] == 1
    assert mask[10, 24] == 0 and mask[10, 16] == 0 and mask[5, 5] == 0


def test_labelme_unknown_label_is_one_line(tmp_path):
    write_labelme(tmp_path, splits=("train",), per_split=1)
    path = tmp_path / "train" / "train_0.json"
    data = json.loads(path.read_text())
    data["shapes"][0]["label"] = "bus"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"train_0\.json: label 'bus' is not in the class list"):
        build_dataset("labelme", tmp_path, "train").load(0)


def test_labelme_shapes_match_the_drawn_regions():
    assert [s["label"] for s in labelme_shapes()] == ["road", "car"]


# ---------------------------------------------------------------------------------- CVAT
def test_cvat_labelmap_order_and_unknown_colour(tmp_path):
    write_cvat(tmp_path)
    dataset = build_dataset("cvat", tmp_path, "val")
    assert dataset.classes == ("background", "road", "car")
    assert (dataset.load(2)[1].numpy() == expected_mask()).all()
    mask_path = tmp_path / "SegmentationClass" / "val_2.png"
    rgb = np.array(Image.open(mask_path))
    rgb[3, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(mask_path)
    with pytest.raises(DataError, match=r"val_2\.png: colour \(1, 2, 3\) at \(row 3, col 5\)"):
        dataset.load(2)


def test_cvat_single_subset_list_is_split_by_hash(tmp_path):
    write_cvat(tmp_path)
    lists = tmp_path / "ImageSets" / "Segmentation"
    names = (lists / "train.txt").read_text() + (lists / "val.txt").read_text()
    (lists / "train.txt").unlink()
    (lists / "val.txt").unlink()
    (lists / "default.txt").write_text(names)
    train, val = (build_dataset("cvat", tmp_path, s) for s in ("train", "val"))
    assert len(train) + len(val) == 6 and len(val) >= 1
    assert {p[0].stem for p in train.samples}.isdisjoint(p[0].stem for p in val.samples)


# -------------------------------------------------------------------------- Label Studio
def test_labelstudio_latest_annotation_upload_prefix_and_smaller_wins(tmp_path):
    write_labelstudio(tmp_path)
    dataset = build_dataset("labelstudio", tmp_path, "all")
    assert dataset.classes == ("background", "car", "road")  # background + sorted labels
    assert len(dataset) == 6
    names = [dataset.sample_name(i) for i in range(6)]
    first = names.index("street1")
    # task 1's older annotation (all car) is not used; the car (smaller) wins over the road
    assert (dataset.load(first)[1].numpy() == expected_mask(road=2, car=1)).all()


def test_labelstudio_class_list_order_and_missing_image(tmp_path):
    write_labelstudio(tmp_path)
    (tmp_path / "classes.txt").write_text("background\nroad\ncar\n")
    dataset = build_dataset("labelstudio", tmp_path, "all")
    assert dataset.classes == ("background", "road", "car")
    assert (dataset.load(0)[1].numpy() == expected_mask()).all()
    (tmp_path / "images" / "street3.png").unlink()
    with pytest.raises(DataError, match=r"street3\.png: image of task 3 not found"):
        build_dataset("labelstudio", tmp_path, "all")


# --------------------------------------------------------------------------- colour masks
def test_colour_masks_palette_order_void_colour_and_unknown_colour(tmp_path):
    write_colour_masks(tmp_path)
    dataset = build_dataset("colour_masks", tmp_path, "train")
    assert dataset.classes == ("road", "car", "sky")
    expected = expected_mask(background=2, road=0, car=1)
    expected[0, 0] = 255
    assert (dataset.load(0)[1].numpy() == expected).all()
    mask_path = tmp_path / "masks" / "train" / "train_1.png"
    rgb = np.array(Image.open(mask_path))
    rgb[7, 9] = (10, 10, 10)  # an antialiased edge colour
    Image.fromarray(rgb).save(mask_path)
    with pytest.raises(DataError) as error:
        dataset.load(1)
    message = str(error.value)
    assert "train_1.png: colour (10, 10, 10) at (row 7, col 9) is not in the palette" in message
    assert "\n" not in message


def test_colour_masks_black_is_not_void_unless_listed(tmp_path):
    write_colour_masks(tmp_path)
    (tmp_path / "palette.yaml").write_text("road: [128, 64, 128]\ncar: [0, 0, 142]\n")
    with pytest.raises(DataError, match=r"colour \(0, 0, 0\) at \(row 0, col 0\)"):
        build_dataset("colour_masks", tmp_path, "val").load(0)
    (tmp_path / "palette.yaml").write_text("road: [128, 64, 128]\ncar: [0, 0, 142, 1]\n")
    with pytest.raises(DataError, match=r"palette\.yaml: 'car' needs \[r, g, b\]"):
        build_dataset("colour_masks", tmp_path, "val")


# ----------------------------------------------------------------------------- class_map
@pytest.mark.parametrize("fmt", FORMATS)
def test_class_map_merges_and_drops_in_every_format(tmp_path, fmt):
    WRITERS[fmt](tmp_path)
    plain = build_dataset(fmt, tmp_path, "val")
    road, car = plain.classes.index("road"), plain.classes.index("car")
    others = [n for n in plain.classes if n not in ("road", "car")]
    class_map = {"car": "vehicle", "road": "vehicle", others[0]: "ignore"}
    mapped = build_dataset(fmt, tmp_path, "val", class_map=class_map)
    assert "vehicle" in mapped.classes and "car" not in mapped.classes
    assert mapped.num_classes == plain.num_classes - 2
    before, after = plain.load(0)[1], mapped.load(0)[1]
    vehicle = mapped.classes.index("vehicle")
    assert ((before == road) | (before == car)).eq(after == vehicle).all()
    assert (after[before == plain.classes.index(others[0])] == 255).all()
    assert mapped.sample_name(0) == plain.sample_name(0)


def test_class_map_order_and_errors(tmp_path):
    write_cvat(tmp_path)
    info = build_dataset("cvat", tmp_path, "val").class_info
    targets, table = plan_class_map(info, {"road": "car", "background": "sky"})
    assert targets.names == ("sky", "car") and table.tolist() == [0, 1, 1]
    assert targets.palette == (info.palette[0], info.palette[1])
    with pytest.raises(RecipeError, match=r"data.class_map: 'bus' is not a class"):
        plan_class_map(info, {"bus": "car"})
    with pytest.raises(RecipeError, match="every class to 'ignore'"):
        plan_class_map(info, dict.fromkeys(info.names, "ignore"))


# ----------------------------------------------------------------------------- data check
@pytest.mark.parametrize("fmt", FORMATS)
def test_data_check_reports_each_format(tmp_path, fmt):
    WRITERS[fmt](tmp_path)
    report = check_dataset(tmp_path, fmt)
    assert report.ok and set(report.splits) == {"train", "val"}
    stats = report.statistics["train"]
    assert stats.images == report.splits["train"]
    road = stats.names.index("road")
    assert (
        stats.pixels[road]
        == stats.images * ROAD[0].stop // 2 * S - stats.pixels[stats.names.index("car")]
    )
    assert f"(format {fmt})" in format_report(report)


def test_data_check_lists_a_bad_colour_as_a_problem(tmp_path):
    write_colour_masks(tmp_path)
    mask_path = tmp_path / "masks" / "val" / "val_0.png"
    rgb = np.array(Image.open(mask_path))
    rgb[1, 2] = (9, 9, 9)
    Image.fromarray(rgb).save(mask_path)
    report = check_dataset(tmp_path, "colour_masks", class_map={"sky": "ignore"})
    assert not report.ok and len(report.problems) == 1
    assert "[val]" in report.problems[0] and "(9, 9, 9) at (row 1, col 2)" in report.problems[0]
    assert report.statistics["train"].names == ("road", "car")


def test_a_class_mapped_dataset_pickles_for_dataloader_workers(tmp_path):
    import pickle

    write_cvat(tmp_path)
    mapped = build_dataset("cvat", tmp_path, "val", class_map={"car": "road"})
    copy = pickle.loads(pickle.dumps(mapped))
    assert copy.classes == ("background", "road")
    assert copy.colour_table == mapped.dataset.colour_table  # format attributes pass through
    assert copy.load(1)[1].equal(mapped.load(1)[1])
    assert set(copy.load(1)[1].unique().tolist()) == {0, 1}


@needs_coco
def test_coco_one_file_export_is_split_by_image_name_hash(tmp_path):
    write_coco(tmp_path, splits=("default",), per_split=5)
    (tmp_path / "images" / "default").rename(tmp_path / "all_images")
    (tmp_path / "images").rmdir()
    (tmp_path / "all_images").rename(tmp_path / "images")
    train, val, every = (build_dataset("coco", tmp_path, s) for s in ("train", "val", "all"))
    assert len(train) + len(val) == len(every) == 5 and len(val) == 1
    names = {train.sample_name(i) for i in range(len(train))}
    assert val.sample_name(0) not in names
    assert (val.load(0)[1].numpy()[4:] == expected_mask()[4:]).all()


@needs_coco
def test_a_third_party_coco_file_reads_crowd_over_polygon(tmp_path):
    """Datumaro's COCO test asset (tests/data/datumaro_coco_instances, MIT, see NOTICE.md):
    its crowd RLE (column-major runs 0, 20, 30) voids the first two columns, over its polygon."""
    import shutil
    from pathlib import Path

    asset = Path(__file__).parent / "data" / "datumaro_coco_instances"
    dataset = build_dataset("coco", asset, "val")
    assert dataset.classes == ("background", "a", "b", "c") and len(dataset) == 1
    image, mask = dataset.load(0)
    assert image.shape == (3, 10, 5)
    expected = np.zeros((10, 5), np.int64)
    expected[:, :2] = 255
    assert (mask.numpy() == expected).all()
    copy = tmp_path / "asset"
    shutil.copytree(asset, copy)
    path = copy / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if not a["iscrowd"]]
    path.write_text(json.dumps(data))
    polygon = build_dataset("coco", copy, "val").load(0)[1].numpy()
    assert set(np.unique(polygon)) == {0, 1} and (polygon[:, 2:] == 0).all()
    assert polygon[0, 0] == 1
