"""engine.predict_loader: decode records, same-size groups, shards and the background writer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from image_bytes import png_bytes

from fcnseg.engine.predict_loader import (
    FEW_INPUTS,
    BackgroundWriter,
    Decoded,
    DecodeDataset,
    decoded_inputs,
    default_workers,
    failure_reason,
    same_size_groups,
    shard,
)


def decoded(index: int, height: int | None, width: int = 4) -> Decoded:
    image = None if height is None else torch.zeros(3, height, width, dtype=torch.uint8)
    return Decoded(index, Path(f"{index}.png"), image, None if image is not None else "bad")


def test_failure_reason_starts_with_the_path_and_is_one_line():
    path = Path("in/a.png")
    assert failure_reason(path, ValueError("broken\n  header")) == "in/a.png: broken header"
    assert failure_reason(path, ValueError("in/a.png: broken")) == "in/a.png: broken"
    missing = FileNotFoundError(2, "No such file or directory", "in/a.png")
    assert failure_reason(path, missing) == "in/a.png: No such file or directory"


def test_default_workers_and_shards():
    assert default_workers(FEW_INPUTS - 1) == 0
    assert 1 <= default_workers(FEW_INPUTS) <= 2
    items = list(range(7))
    parts = [shard(items, rank, 3) for rank in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4]


def test_groups_keep_order_split_on_size_and_isolate_failures():
    items = [decoded(0, 8), decoded(1, 8), decoded(2, 8), decoded(3, None), decoded(4, 8)]
    items += [decoded(5, 6), decoded(6, 6)]
    groups = [[item.index for item in group] for group in same_size_groups(iter(items), 2)]
    assert groups == [[0, 1], [2], [3], [4], [5, 6]]


def test_decode_records_failures_instead_of_raising(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(png_bytes(12, 10))
    bad.write_bytes(b"not an image")
    records = list(decoded_inputs([good, bad], num_workers=0))
    assert records[0].image is not None and tuple(records[0].image.shape) == (3, 12, 10)
    assert records[1].image is None and records[1].reason.startswith(str(bad))
    with pytest.raises(Exception, match="bad.png"):
        DecodeDataset([bad], raise_errors=True)[0]


def test_background_writer_runs_every_job_and_reraises_the_first_error():
    done: list[int] = []
    writer = BackgroundWriter(size=2)
    for index in range(5):
        writer.submit(lambda index=index: done.append(index))
    writer.close()
    assert done == list(range(5))

    failing = BackgroundWriter()
    release = threading.Event()

    def boom() -> None:
        release.wait(5)
        raise OSError(28, "No space left on device")

    failing.submit(boom)
    release.set()
    with pytest.raises(OSError, match="No space"):
        failing.close()


def test_foreground_writer_runs_jobs_at_once():
    done: list[int] = []
    writer = BackgroundWriter(foreground=True)
    writer.submit(lambda: done.append(1))
    assert done == [1]
    writer.close()
