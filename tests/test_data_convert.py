"""`fcnseg data convert`: every format written as the folder layout, read back identically;
the output folder's rules (new or empty, nothing left behind by a failed conversion)."""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest
import yaml
from annotation_fixtures import WRITERS, write_colour_masks, write_cvat
from PIL import Image

from fcnseg.cli import main
from fcnseg.data.convert import convert_dataset
from fcnseg.data.datasets.base import DataError
from fcnseg.data.datasets.registry import build_dataset
from fcnseg.errors import OutputError

FORMATS = [
    pytest.param(
        fmt,
        marks=pytest.mark.skipif(find_spec("pycocotools") is None, reason="needs pycocotools"),
    )
    if fmt == "coco"
    else fmt
    for fmt in sorted(WRITERS)
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_reads_back_as_the_folder_format(tmp_path, fmt):
    source, out = tmp_path / "source", tmp_path / "out"
    WRITERS[fmt](source)
    result = convert_dataset(fmt, source, out)
    assert result.skipped.keys() <= {"test"} and result.written
    for split, count in result.written.items():
        original = build_dataset(fmt, source, split)
        converted = build_dataset("folder", out, split)
        assert converted.classes == original.classes and len(converted) == count
        for index in range(count):
            name = original.sample_name(index)
            other = [converted.sample_name(i) for i in range(count)].index(name)
            image, mask = original.load(index)
            image2, mask2 = converted.load(other)
            assert image.equal(image2) and mask.equal(mask2)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_convert_applies_the_class_map_and_writes_the_palette(tmp_path):
    write_cvat(tmp_path / "cvat")
    result = convert_dataset(
        "cvat", tmp_path / "cvat", tmp_path / "out", class_map={"car": "road"}, splits=["val"]
    )
    classes = yaml.safe_load((tmp_path / "out" / "classes.yaml").read_text())
    assert classes == {
        "names": ["background", "road"],
        "palette": [[0, 0, 0], [128, 64, 128]],
        "ignore_index": 255,
    }
    assert result.written == {"val": 3}
    mask = np.array(Image.open(tmp_path / "out" / "masks" / "val" / "val_0.png"))
    assert set(np.unique(mask)) == {0, 1}


def test_convert_refuses_a_non_empty_out_and_leaves_nothing_after_a_bad_file(tmp_path):
    write_colour_masks(tmp_path / "source")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an empty folder"):
        convert_dataset("colour_masks", tmp_path / "source", occupied)
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    mask_path = tmp_path / "source" / "masks" / "val" / "val_2.png"
    rgb = np.array(Image.open(mask_path))
    rgb[0, 1] = (5, 5, 5)
    Image.fromarray(rgb).save(mask_path)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"val_2\.png: colour \(5, 5, 5\)"):
        convert_dataset("colour_masks", tmp_path / "source", out)
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError):
        convert_dataset("colour_masks", tmp_path / "source", empty)
    assert empty.is_dir() and not any(empty.iterdir())


def test_cli_convert_and_check_with_class_map(tmp_path, capsys):
    write_cvat(tmp_path / "cvat")
    out = tmp_path / "out"
    code = main(
        ["data", "convert", "--format", "cvat", "--data-root", str(tmp_path / "cvat"),
         "--out", str(out), "--class-map", "{car: ignore}"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "train: 3 images" in printed and "test: skipped" in printed
    assert "classes (2): background, road" in printed
    assert main(["data", "check", "--format", "folder", "--root", str(out)]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert main(["data", "convert", "--format", "cvat", "--data-root", str(tmp_path / "cvat"),
                 "--out", str(out)]) == 2  # fmt: skip
    assert "not an empty folder" in capsys.readouterr().err
    code = main(
        ["data", "check", "--format", "cvat", "--root", str(tmp_path / "cvat"),
         "--class-map", "{bus: car}"]
    )  # fmt: skip
    assert code == 2 and "'bus' is not a class" in capsys.readouterr().err
