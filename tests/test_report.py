"""HTML reports: `fcnseg eval --report DIR` and `fcnseg report RUN` write a self-contained
folder (index.html + PNGs), show the JSON's scores, escape what comes from files, and write
nothing outside the folder they are given."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN_OVERRIDES
from PIL import Image

from fcnseg.cli import main
from fcnseg.data.datasets.synthetic import SyntheticStreets
from fcnseg.data.transforms import eval_transform
from fcnseg.engine.evaluate import eval_loader, evaluate_heads, scores_json
from fcnseg.report import EvalCollector, write_eval_report, write_run_report
from fcnseg.report.collect import image_mean_iu

TINY = TINY_TRAIN_OVERRIDES


class Colourist(torch.nn.Module):
    """Class scores from pixel colour alone: wrong often enough to give a worst-images list."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 6, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*")}


def _scores_shown(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-score="(\w+)"><div class="value">([^<]+)<', html))


def test_image_mean_iu_and_worst_order():
    confusion = np.array([[5, 5], [0, 10]])
    assert image_mean_iu(confusion) == pytest.approx((5 / 10 + 10 / 15) / 2)
    assert image_mean_iu(np.zeros((2, 2), dtype=np.int64)) is None
    collector = EvalCollector(2, 255, worst=2)
    target = torch.tensor([[[0, 0], [1, 1]]] * 3)
    good = target.clone()
    bad = torch.tensor([[1, 1], [0, 0]])
    half = torch.tensor([[0, 1], [1, 1]])
    collector(torch.stack([good[0], bad, half]), target)
    worst = collector.worst()
    assert [entry.index for entry in worst] == [1, 2]
    assert worst[0].mean_iu == 0.0
    assert collector.confusion.sum() == 12
    fields = collector.json_fields(["a", "b", "c"])
    assert [item["name"] for item in fields["per_image"]] == ["a", "b", "c"]


def build_eval(tmp_path: Path, classes_override: list[str] | None = None):
    dataset = SyntheticStreets(
        split="val", num_images=6, size=(48, 64), transform=eval_transform("imagenet")
    )
    collector = EvalCollector(dataset.num_classes, dataset.ignore_index)
    scores = evaluate_heads(
        Colourist().eval(),
        eval_loader(dataset),
        dataset.num_classes,
        dataset.ignore_index,
        on_batch=collector,
    )["semantic"]
    names = classes_override or list(dataset.classes)
    payload = {
        "source": "tiny.safetensors",
        "format": "synthetic",
        "split": "val",
        "images": len(dataset),
        "mode": "whole",
        "inference_options": {},
        **scores_json(scores, names),
    }
    meta = {
        "model": "colourist <b>",
        "classes": names,
        "palette": [list(c) for c in dataset.palette],
        "normalization": "imagenet",
        "config": {"note": "<script>alert(1)</script>"},
    }
    return dataset, collector, payload, meta


def test_eval_report_files_scores_and_containment(tmp_path):
    dataset, collector, payload, meta = build_eval(tmp_path)
    before = _files(tmp_path)
    out = tmp_path / "report"
    index = write_eval_report(out, payload, meta, collector, dataset)
    assert index == out / "index.html"
    assert {p for p in _files(tmp_path) - before if out not in p.parents and p != out} == set()
    written = {p.name for p in out.iterdir()}
    assert {"index.html", "iou.png", "confusion.png", "per_image_miu.png"} <= written
    assert {f"worst_{k}.png" for k in range(1, 7)} <= written  # 6 images: all among the worst
    html = index.read_text()
    shown = _scores_shown(html)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        assert shown[key] == f"{100 * payload[key]:.1f}"
    for name in dataset.classes:
        assert name in html
    for source in re.findall(r'<img src="([^"]+)"', html):
        assert (out / source).is_file() and "/" not in source
        assert Image.open(out / source).size[0] > 10
    assert "http://" not in html and "https://" not in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # the recipe is escaped
    assert "colourist &lt;b&gt;" in html
    strip = Image.open(out / "worst_1.png")
    assert strip.size[1] == 48 and strip.size[0] == 4 * 64 + 3 * 6


def test_eval_report_escapes_class_names(tmp_path):
    names = ["sky", "<img src=x onerror=alert(1)>", "road", "car", "pole", "sign"]
    dataset, collector, payload, meta = build_eval(tmp_path, names)
    html = write_eval_report(tmp_path / "r", payload, meta, collector, dataset).read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_report_refuses_a_file_as_folder(tmp_path):
    dataset, collector, payload, meta = build_eval(tmp_path)
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    with pytest.raises(NotADirectoryError):
        write_eval_report(target, payload, meta, collector, dataset)
    assert target.read_text() == "keep me"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["train", "--out", str(out), *TINY, "train.val_every=1"]) == 0
    return out


def test_cli_eval_report_and_run_report(tiny_run, tmp_path, capsys):
    report = tmp_path / "eval-report"
    scores = tmp_path / "scores.json"
    args = ["eval", "--run", str(tiny_run), "--out", str(scores), "--report", str(report)]
    assert main(args) == 0
    assert "report written to" in capsys.readouterr().out
    payload = json.loads(scores.read_text())
    assert len(payload["confusion_matrix"]) == 6 and len(payload["per_image"]) == 4
    html = (report / "index.html").read_text()
    assert _scores_shown(html)["mean_iu"] == f"{100 * payload['mean_iu']:.1f}"
    assert (report / "worst_1.png").is_file()

    # The run report: learning curves, plus the evaluation found in the run directory.
    (tiny_run / "eval-synthetic-val.json").write_text(scores.read_text())
    before = _files(tiny_run)
    assert main(["report", str(tiny_run)]) == 0
    folder = tiny_run / "report"
    new = _files(tiny_run) - before
    assert all(folder == p or folder in p.parents for p in new)
    run_html = (folder / "index.html").read_text()
    assert (folder / "loss.png").is_file() and (folder / "per_class_iu.png").is_file()
    assert "Evaluation: eval-synthetic-val.json" in run_html
    assert _scores_shown(run_html)["mean_iu"] == f"{100 * payload['mean_iu']:.1f}"
    assert (folder / "eval0_confusion.png").is_file()

    other = tmp_path / "elsewhere"
    assert write_run_report(tiny_run, other) == other / "index.html"


def test_report_of_a_non_run_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "run directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------- malformed run files: one line each
def fake_run(root: Path, palette: object = ((0, 0, 0), (255, 0, 0))) -> Path:
    """A run folder as `fcnseg train` writes it (two classes), without training anything."""
    from safetensors.torch import save_file

    root.mkdir(parents=True)
    (root / "metrics.csv").write_text("epoch,step,train_loss,mean_iu\n1,2,0.5,0.4\n2,4,0.3,0.5\n")
    records = [{"step": s, "mean_iu": 0.4, "per_class_iu": {"a": 0.3, "b": 0.5}} for s in (2, 4)]
    (root / "val_scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "summary.json").write_text(json.dumps({"stopped": "completed", "steps": 4}))
    scores = {"pixel_accuracy": 0.8, "mean_accuracy": 0.6, "mean_iu": 0.5}
    scores |= {"frequency_weighted_iu": 0.6, "per_class_iu": {"a": 0.4, "b": 0.6}}
    scores |= {"confusion_matrix": [[3, 1], [0, 4]], "per_image": [{"mean_iu": 0.5}]}
    (root / "eval-folder-val.json").write_text(json.dumps(scores))
    meta = {"model": "m", "classes": ["a", "b"], "palette": palette}
    save_file({"x": torch.zeros(1)}, str(root / "model.safetensors"), {"fcnseg": json.dumps(meta)})
    return root


MALFORMED_RUN_FILES = {
    "metrics-binary": ("metrics.csv", b"\xff\xfe\x00\x81" * 16),
    "metrics-no-step": ("metrics.csv", b"a,b\n1,2\n"),
    "val-scores-list": ("val_scores.jsonl", b'[1, 2]\n{"step": 4}\n'),
    "val-scores-string-iu": (
        "val_scores.jsonl",
        b'{"step": 2, "per_class_iu": {"a": "abc"}}\n{}\n',
    ),
    "val-scores-step-text": ("val_scores.jsonl", b'{"step": "two", "per_class_iu": {}}\n'),
    "val-scores-bad-middle-line": ("val_scores.jsonl", b'{"step": 2}\n{not json\n{"step": 4}\n'),
    "summary-list": ("summary.json", b"[1, 2, 3]"),
    "summary-not-json": ("summary.json", b"{stopped: yes"),
    "eval-list": ("eval-folder-val.json", b"[]"),
    "eval-score-string": ("eval-folder-val.json", b'{"mean_iu": "high"}'),
    "eval-per-class-list": ("eval-folder-val.json", b'{"per_class_iu": [0.1, 0.2]}'),
    "eval-ragged-confusion": (
        "eval-folder-val.json",
        b'{"per_class_iu": {"a": 0.1, "b": 0.2}, "confusion_matrix": [[1, 2], [3]]}',
    ),
    "eval-per-image-strings": ("eval-folder-val.json", b'{"per_image": ["x"]}'),
}


def test_report_of_a_well_formed_fake_run(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    assert (run / "report" / "eval0_confusion.png").is_file()


@pytest.mark.parametrize("spoil", sorted(MALFORMED_RUN_FILES))
def test_report_of_a_malformed_run_file_is_one_line_naming_it(tmp_path, capsys, spoil):
    run = fake_run(tmp_path / "run")
    name, data = MALFORMED_RUN_FILES[spoil]
    (run / name).write_bytes(data)
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert name in err and "fix or remove it" in err, err
    assert not (run / "report").exists()  # refused before the report folder was made


@pytest.mark.parametrize(
    "palette", [["red", "blue"], [[0, 0, 0], [300, 0, 0]], 7, [[0, 0], [1, 1]]], ids=str
)
def test_report_with_a_malformed_palette_is_one_line(tmp_path, capsys, palette):
    run = fake_run(tmp_path / "run", palette=palette)
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors" in err and "palette" in err, err


def test_report_of_a_run_that_logged_non_finite_losses(tmp_path, capsys):
    """Runs from before the divergence guard logged nan / inf losses; their report still draws
    the finite points."""
    run = fake_run(tmp_path / "run")
    rows = "epoch,step,train_loss,mean_iu\n1,2,0.9,0.4\n2,4,nan,0.3\n3,6,inf,nan\n"
    (run / "metrics.csv").write_text(rows)
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    assert (run / "report" / "loss.png").is_file()
    assert "nan" not in (run / "report" / "index.html").read_text().lower()
