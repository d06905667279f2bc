"""`fcnseg predict` at scale (issue 17, item 4): batching, DataLoader workers, torchrun shards.

What must not change while it gets faster: every input gets its own output, a bad input is
skipped and counted, and under torchrun every input is written exactly once (by one rank).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from image_bytes import png_bytes
from torch import nn

from fcnseg.cli import main
from fcnseg.engine.metadata import validate_weights_metadata
from fcnseg.engine.predict import PredictionRun, predict_files
from fcnseg.engine.session import InferenceSession

HERE = Path(__file__).resolve()
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


def tiny_session() -> InferenceSession:
    """The tiny model behind a session (four classes, PALETTE), on the CPU."""
    metadata = validate_weights_metadata(
        {
            "model": "tiny",
            "num_classes": 4,
            "classes": ["a", "b", "c", "d"],
            "palette": PALETTE,
            "normalization": "imagenet",
        },
        "tiny",
    )
    return InferenceSession.for_model(tiny_model(), metadata)


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (height, width) in enumerate(sizes):
        path = folder / f"img_{index:02d}.png"
        path.write_bytes(png_bytes(height, width, seed=index))
        paths.append(path)
    return paths


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_batched_outputs_equal_unbatched(tmp_path):
    # Runs of one size (grouped) and size changes (a group ends early).
    sizes = [(32, 40)] * 5 + [(24, 24)] * 2 + [(32, 40)] * 3
    files = write_images(tmp_path / "in", sizes)
    session = tiny_session()
    one = predict_files(session, files, tmp_path / "one", num_workers=0)
    many = predict_files(session, files, tmp_path / "many", batch_size=4, num_workers=2)
    assert [p.name for p in one] == [p.name for p in many]
    assert len(one) == 2 * len(files)
    assert outputs(tmp_path / "one") == outputs(tmp_path / "many")


def test_corrupt_input_skipped_and_counted_with_workers(tmp_path, capsys):
    files = write_images(tmp_path / "in", [(32, 40)] * 9)
    bad = tmp_path / "in" / "img_04.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    report = PredictionRun(files=files)
    predict_files(
        tiny_session(),
        files,
        tmp_path / "out",
        report=report,
        batch_size=3,
        num_workers=2,
    )
    assert [path for path, _ in report.failed] == [bad]
    assert len(report.written) == 2 * 8
    assert report.counts() == (16, 1)
    assert not (tmp_path / "out" / "img_04.png").exists()
    assert (tmp_path / "out" / "img_05.png").is_file()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fcnseg predict: skipped {bad}")


def test_write_error_is_raised(tmp_path, monkeypatch):
    """An error in the background writer stops predict as a foreground write would."""
    files = write_images(tmp_path / "in", [(32, 40)] * 3)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("PIL.Image.Image.save", full_disk)
    with pytest.raises(OSError, match="No space"):
        predict_files(tiny_session(), files, tmp_path / "out")


def _weights(path: Path) -> Path:
    from test_hostile_inputs import MODEL, good_meta

    from fcnseg.engine.checkpoint import save_weights
    from fcnseg.models import build_model

    torch.manual_seed(0)
    meta = good_meta()
    save_weights(path, build_model(MODEL, meta["num_classes"], pretrained=False), meta)
    return path


def _child(weights: str, images: str, out: str, log: str) -> int:
    """One torchrun rank: `fcnseg predict`, logging every file this rank saves."""
    from fcnseg.engine import predict_outputs

    torch.set_num_threads(1)
    rank = os.environ["RANK"]
    original = predict_outputs.save_image

    def logged_save(image, target, *args, **kwargs):
        with open(log, "a") as stream:
            stream.write(f"{rank} {target}\n")
        return original(image, target, *args, **kwargs)

    predict_outputs.save_image = logged_save
    code = main(["predict", "--weights", weights, images, "--out", out, "--device", "cpu"])
    # predict leaves the process group it joined (an open one can abort the exit).
    assert not torch.distributed.is_initialized(), "predict left the process group open"
    return code


@pytest.mark.slow
def test_torchrun_two_ranks_write_each_output_once(tmp_path):
    weights = _weights(tmp_path / "w.safetensors")
    write_images(tmp_path / "in", [(32, 40)] * 7)
    out, log = tmp_path / "out", tmp_path / "saves.log"
    # The tests folder first, then the caller's path (a worktree's src/ when it sets one).
    path = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    result = subprocess.run(
        [*launcher, "--nproc_per_node", "2", str(HERE), str(weights), str(tmp_path / "in")]
        + [str(out), str(log)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saves = [line.split(" ", 1) for line in log.read_text().splitlines()]
    targets = [target for _, target in saves]
    assert len(targets) == len(set(targets)) == 14  # 7 PNGs + 7 overlays, none twice
    assert {rank for rank, _ in saves} == {"0", "1"}  # both ranks did a share
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(t).name for t in targets)
    assert result.stdout.count(f"7 images -> 14 files in {out}") == 1  # rank 0 only


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:5]))
