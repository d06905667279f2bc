"""The project's error types: what the CLI reports in one line as the user's to fix.

Why a hierarchy: `fcnseg` must tell a user's mistake (a bad recipe, a corrupt image, a weights
file for another model, an output folder that cannot be used) from a bug in fcnseg. The first is
one line on stderr naming the file or field and the fix, exit status 2; the second keeps its
traceback so that it gets reported and fixed. Catching ValueError or KeyError wholesale, as the
CLI once did, made every internal bug look like a user mistake.

Each class also derives from ValueError so that code written against the old convention (and
callers who catch ValueError around fcnseg functions) keeps working. This module imports nothing
of fcnseg, so any layer can raise these.
"""

from __future__ import annotations


class FcnsegError(ValueError):
    """Base of every error that is the user's to fix; the message is one line with the fix."""


class RecipeError(FcnsegError):
    """A recipe (YAML) or a `key=value` override is malformed, ill-typed or names an unknown key."""


class DataError(FcnsegError):
    """Bad data on disk. The message is one line naming the file and what to do about it."""


class WeightsError(FcnsegError):
    """A weights, checkpoint or run source that cannot be used: missing, corrupt, unsafe, or
    with metadata outside the schema (fcnseg.engine.checkpoint validates it)."""


class ModelOptionError(FcnsegError):
    """A model name or model option that no builder accepts."""


class OutputError(FcnsegError):
    """An output location that cannot be used: exists, is a file, escapes its folder, is locked."""


class UsageError(FcnsegError):
    """Command-line arguments that contradict each other or name nothing usable."""


class TrainingDiverged(FcnsegError):
    """A non-finite loss or weights stopped training: nothing of the diverged state was saved,
    the last finite checkpoint stays, summary.json says `"stopped": "diverged"` (exit 2)."""
