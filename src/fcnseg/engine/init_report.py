"""What `model.init=W` did: tensors copied, re-initialised, and skipped, by count and name.

Why a report: `model.init` copies the tensors whose names and shapes match, which is the right
rule (the paper's stage-wise FCN-16s-from-FCN-32s init, fine-tuning to new classes) and a silent
trap: a shipped model whose head options differ from the recipe's copied its encoder only, and
nothing said so. The report names the tensors that kept their fresh initialisation and those
of the file that found no place, so a mismatch is visible in the first lines of a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

#: Names listed per category before "... and N more".
LISTED_NAMES = 8


def _listed(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    more = len(names) - LISTED_NAMES
    return shown + (f", ... and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class InitReport:
    """Tensors of the model copied from `source`, left as initialised, and skipped from it.

    Attributes:
        copied: model tensors the file had with the same name and shape (loaded).
        shape_mismatch: "name model-shape vs file-shape" for names both have in other shapes
            (re-initialised: they keep the model's fresh values).
        missing: model tensors the file lacks (re-initialised).
        unused: file tensors the model has no tensor of that name for (skipped).
    """

    source: str
    copied: tuple[str, ...]
    shape_mismatch: tuple[str, ...]
    missing: tuple[str, ...]
    unused: tuple[str, ...]

    @classmethod
    def compare(
        cls, source: str, model: Mapping[str, Tensor], file: Mapping[str, Tensor]
    ) -> InitReport:
        """The report of copying `file`'s tensors into a model whose state dict is `model`."""
        copied, mismatch, missing = [], [], []
        for name, value in model.items():
            if name not in file:
                missing.append(name)
            elif tuple(file[name].shape) != tuple(value.shape):
                mismatch.append(
                    f"{name} {tuple(value.shape)} vs {tuple(file[name].shape)} in the file"
                )
            else:
                copied.append(name)
        unused = [name for name in file if name not in model]
        return cls(source, tuple(copied), tuple(mismatch), tuple(missing), tuple(unused))

    @property
    def reinitialised(self) -> int:
        return len(self.shape_mismatch) + len(self.missing)

    def summary(self) -> str:
        """Counts on the first line, then the names of what was not copied."""
        lines = [
            f"model.init {self.source}: copied {len(self.copied)} tensors, re-initialised "
            f"{self.reinitialised} ({len(self.shape_mismatch)} of another shape, "
            f"{len(self.missing)} absent from the file), skipped {len(self.unused)} of the file"
        ]
        if self.shape_mismatch:
            lines.append(f"  other shape (re-initialised): {_listed(self.shape_mismatch)}")
        if self.missing:
            lines.append(f"  absent from the file (re-initialised): {_listed(self.missing)}")
        if self.unused:
            lines.append(f"  not in the model (skipped): {_listed(self.unused)}")
        return "\n".join(lines)
