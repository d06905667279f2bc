"""Command-line vocabularies that must be known without importing torch.

Why a leaf of its own: `fcnseg --help` and usage errors must answer at once, so the parser's
choices cannot come from the modules that implement them (those import torch). The modules that
implement them import these names from here, so the lists exist once.
"""

from __future__ import annotations

#: What runs a model (`--engine`): PyTorch eager, onnxruntime on a cached checked graph, its int8
#: graph, or "auto" (onnxruntime when installed and on the CPU, else torch).
RUNTIME_CHOICES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "onnxruntime-int8")

#: Inference modes (`--mode`): one forward of the whole image, overlapping tiles, several
#: scales (each optionally flipped) averaged, or the U-Net overlap-tile strategy (valid tiles
#: over the mirrored image, for nets that declare their context).
INFERENCE_MODES: tuple[str, ...] = ("whole", "sliding", "multiscale", "overlap_tile")
