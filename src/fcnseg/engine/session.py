"""One inference session: a loaded model, how to run it, on what, turned into logits and labels.

Why one object: `eval`, `predict` and `serve` each loaded weights, chose the inference settings,
resolved the runtime and then normalised, ran, picked the primary head and took the argmax in
their own words. `InferenceSession` does each of those once: `InferenceSession.load` (or
`start`, for a model already loaded) is the one place a model, its `InferenceSpec`, its device
and its runtime are decided, and `logits` / `labels` are the one way from a batch to classes.

Monte-Carlo dropout (`mc`, `inference.mc_dropout`) is part of the session for the same reason:
with it, `head_logits` is the log of the mean probabilities of N dropout passes, so eval, predict,
serve and the API all sample the same way, and `segment` adds the per-pixel uncertainty.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fcnseg.engine.device import resolve_device
from fcnseg.engine.loading import LoadedModel, load_model
from fcnseg.engine.metadata import WeightsMetadata
from fcnseg.errors import UsageError
from fcnseg.inference import mc_dropout
from fcnseg.inference.crf import CrfTimer, as_uint8, refine_logits, require_crf
from fcnseg.inference.crf_params import CrfParams, choose_crf
from fcnseg.inference.mc_dropout import DEFAULT_SEED, MCDropout
from fcnseg.inference.runtimes import ResolvedRuntime, resolve_runtime
from fcnseg.inference.spec import InferenceSpec
from fcnseg.models.protocol import map_heads, primary_output

#: Floor of the mean probabilities before their log (MC-dropout logits stay finite).
_LOG_FLOOR: float = 1e-12


def choose_spec(
    metadata: WeightsMetadata, mode: str | None, options: Mapping[str, Any] | None
) -> InferenceSpec:
    """The inference of a run: the command line's mode when given, else the one the weights
    recommend ("inference" in their metadata), else whole-image inference; options given on the
    command line (e.g. --scales) override the recommended ones.

    Why the weights may recommend: a released model can need a particular inference to reach its
    card's numbers (the CamVid model clears 0.30 IoU on every class only with flip + scale
    1.25); stored with the weights, the plain `fcnseg eval --weights W` reproduces the card.
    """
    options = dict(options or {})
    if mode is not None:
        return InferenceSpec.parse(mode, options, "command line")
    recommended = metadata.inference or InferenceSpec()
    return recommended.with_options(options, "command line")


def session_crf(
    loaded: LoadedModel, enabled: bool | None, overrides: Mapping[str, Any] | None
) -> CrfParams | None:
    """The dense CRF a command runs after the net (`choose_crf`: --crf, --no-crf, the weights'
    stored default), checked usable here: pydensecrf2 installed, an RGB model."""
    params = choose_crf(loaded.metadata.crf, enabled, overrides)
    if params is not None:
        stored = f"{loaded.source or 'weights'}: the stored default CRF (--no-crf skips it)"
        check_crf_usable(loaded, "--crf" if enabled else stored)
    return params


def check_crf_usable(loaded: LoadedModel, where: str = "--crf") -> None:
    """UsageError in one line when the CRF cannot run: pydensecrf2 missing, or a model whose
    input is not RGB (the appearance kernel compares colours)."""
    require_crf(where)
    channels = int(getattr(loaded.model, "in_channels", 3))
    if channels != 3:
        raise UsageError(
            f"{where}: the dense CRF compares RGB colours; this model takes {channels} channels"
        )


@dataclass(frozen=True)
class InferenceSession:
    """A model ready to segment: loaded, on its device, behind its runtime, with its inference.

    `crf`: the dense CRF run after the net by `labels` (None: none); `crf_timer` sums its time.
    """

    loaded: LoadedModel
    spec: InferenceSpec
    runtime: ResolvedRuntime
    device: torch.device
    #: Monte-Carlo dropout settings and counters; None: one deterministic pass.
    mc: MCDropout | None = None
    crf: CrfParams | None = None
    crf_timer: CrfTimer = field(default_factory=CrfTimer, compare=False, repr=False)

    @classmethod
    def load(
        cls,
        *,
        weights: str | Path | None = None,
        checkpoint: str | Path | None = None,
        run: str | Path | None = None,
        device: str = "auto",
        runtime: str = "torch",
        mode: str | None = None,
        options: Mapping[str, Any] | None = None,
        threads: int | None = None,
        mc_samples: int | None = None,
        seed: int = DEFAULT_SEED,
        crf: bool | None = None,
        crf_options: Mapping[str, Any] | None = None,
    ) -> InferenceSession:
        """The session of the model from exactly one of weights / checkpoint / run.

        `mode`/`options`: see `choose_spec`; `runtime`: the `--engine` word (see
        fcnseg.inference.runtimes); `device`: "auto" is engine-aware (resolve_device);
        `mc_samples`/`seed`: Monte-Carlo dropout (see `start`), refused for an ONNX runtime
        before anything loads.
        `crf`/`crf_options`: --crf / --no-crf and the --crf-* values (see `session_crf`).
        """
        mc_dropout.check_request(mc_samples, seed, runtime)
        torch_device = resolve_device(device, runtime)
        loaded = load_model(weights, checkpoint, run)
        spec = choose_spec(loaded.metadata, mode, options)
        params = session_crf(loaded, crf, crf_options)
        session = cls.start(
            loaded,
            spec,
            runtime=runtime,
            device=torch_device,
            threads=threads,
            mc_samples=mc_samples,
            seed=seed,
        )
        return session.with_crf(params)

    @classmethod
    def start(
        cls,
        loaded: LoadedModel,
        spec: InferenceSpec,
        *,
        runtime: str = "torch",
        device: torch.device | str = "cpu",
        threads: int | None = None,
        mc_samples: int | None = None,
        seed: int = DEFAULT_SEED,
    ) -> InferenceSession:
        """The session of a model already loaded: moved to `device`, its runtime resolved (for
        ONNX runtimes the cached, checked graph of `loaded.source`).

        With `mc_samples` the session samples that many dropout passes per image (`with_mc`):
        refused in one line for an ONNX runtime or a model without dropout; `auto` is torch."""
        torch_device = torch.device(device)
        model = loaded.model.to(torch_device)
        mc_dropout.check_request(mc_samples, seed, runtime, model, loaded.metadata.model)
        if mc_samples is not None and runtime == "auto":
            reason = "--mc-samples: dropout is sampled in PyTorch"
            resolved = ResolvedRuntime(model.eval(), "torch", runtime, reason)
            return cls(loaded, spec, resolved, torch_device).with_mc(mc_samples, seed)
        resolved = resolve_runtime(
            model, loaded.source, runtime, device=torch_device, threads=threads
        )
        return cls(loaded, spec, resolved, torch_device).with_mc(mc_samples, seed)

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        metadata: WeightsMetadata,
        *,
        spec: InferenceSpec | None = None,
        device: torch.device | str = "cpu",
        runtime: ResolvedRuntime | None = None,
    ) -> InferenceSession:
        """A session around a model built in memory (no file, so no ONNX cache): the torch
        runtime unless `runtime` says otherwise."""
        torch_device = torch.device(device)
        model = model.to(torch_device).eval()
        resolved = runtime or ResolvedRuntime(model, "torch", "torch", "asked for")
        return cls(
            LoadedModel(model, metadata, None), spec or InferenceSpec(), resolved, torch_device
        )

    def with_mc(self, samples: int | None, seed: int = DEFAULT_SEED) -> InferenceSession:
        """This session sampling `samples` dropout passes per image (None: one plain pass); the
        same model and runtime. UsageError (one line) when `samples` is out of bounds, the
        runtime is an ONNX graph or the model has no dropout layer."""
        if samples is None:
            return self if self.mc is None else replace(self, mc=None)
        sampling = MCDropout(samples, seed)
        mc_dropout.check_runtime(self.runtime.name)
        mc_dropout.require_dropout(self.runtime.runnable, self.metadata.model)
        return replace(self, mc=sampling)

    def with_crf(self, crf: CrfParams | None) -> InferenceSession:
        """This session with another default CRF (None: none), and a fresh timer."""
        return replace(self, crf=crf, crf_timer=CrfTimer())

    def crf_line(self) -> str:
        """`crf: <parameters>; N ms per image` (what eval and predict print), "" without a CRF."""
        if self.crf is None:
            return ""
        ms = self.crf_timer.ms_per_image()
        timing = f"{ms:.1f} ms per image" if ms is not None else "no image refined"
        return f"crf: {self.crf.describe()}; {timing}"

    @property
    def metadata(self) -> WeightsMetadata:
        return self.loaded.metadata

    @property
    def in_channels(self) -> int:
        """Bands an input image must have: the model's `in_channels`, else the weights'
        `model_options.in_channels`, else the stored normalisation's channel count (3 for the
        presets). Every input path (predict, serve, the raster path) decodes to this many."""
        channels = getattr(self.loaded.model, "in_channels", None)
        if isinstance(channels, int) and not isinstance(channels, bool) and channels > 0:
            return channels
        stored = self.metadata.model_options.get("in_channels")
        if isinstance(stored, int) and not isinstance(stored, bool) and stored > 0:
            return stored
        return self.metadata.input_normalization().channels

    @property
    def input_scale(self) -> float:
        """The model's own resize before its backbone (1.0 for nets without one)."""
        scale = getattr(self.loaded.model, "input_scale", 1.0)
        return float(scale) if isinstance(scale, int | float) and scale > 0 else 1.0

    def check_forward_pixels(self, height: int, width: int, source: object) -> None:
        """The spec's per-forward pixel cap, at this model's input scale (DataError above it)."""
        self.spec.check_forward_pixels(height, width, source, self.input_scale)

    def request_pixels(self, height: int, width: int) -> int:
        """Pixels one `height` x `width` image's peak memory scales with (InferenceSpec)."""
        return self.spec.request_pixels(height, width, self.input_scale)

    @property
    def runnable(self) -> Any:
        """What runs the model: the module itself, or an onnxruntime graph."""
        return self.runtime.runnable

    @property
    def predictor(self) -> Any:
        """What `predict_logits` is called on: the runnable, carrying the model's tile geometry
        under the overlap-tile mode (an exported graph has no `tile_context` of its own)."""
        from fcnseg.inference.overlap_tile import with_tile_geometry

        if self.spec.mode != "overlap_tile":
            return self.runnable
        return with_tile_geometry(self.runnable, self.loaded.model)

    def normalize(self, images: Sequence[Tensor] | Tensor) -> Tensor:
        """C x H x W images (one size; uint8 0-255 or float 0-1) as the normalised float batch
        the model takes, by the numbers stored with the weights (or their preset's)."""
        numbers = self.metadata.input_normalization()
        batch = torch.stack([numbers.apply(image) for image in images])
        return batch.to(self.device)

    def head_logits(self, batch: Tensor) -> Tensor | dict[str, Tensor]:
        """Every head's logits of a normalised batch under this session's inference; with MC
        dropout the log of the mean probabilities (softmax gives them back, argmax is theirs)."""
        from fcnseg.inference import predict_logits

        if self.mc is None:
            return predict_logits(self.predictor, batch, mode=self.spec.mode, **self.spec.options())
        return map_heads(self.head_probs(batch), lambda p: p.clamp_min(_LOG_FLOOR).log())

    def head_probs(self, batch: Tensor) -> Tensor | dict[str, Tensor]:
        """Every head's class probabilities of a normalised batch: one pass, or the mean of the
        MC-dropout passes."""
        from fcnseg.inference import predict_probs

        def probs_of(images: Tensor) -> Tensor | dict[str, Tensor]:
            return predict_probs(self.predictor, images, self.spec.mode, **self.spec.options())

        if self.mc is None:
            return probs_of(batch)
        return mc_dropout.mc_dropout_probs(self.runnable, batch, probs_of, self.mc)

    def logits(self, batch: Tensor) -> Tensor:
        """The primary head's logits N x C x H x W of a normalised batch."""
        return primary_output(self.head_logits(batch))

    def labels(self, images: Sequence[Tensor] | Tensor) -> Tensor:
        """Class ids N x H x W (on the CPU) of uint8 C x H x W images of one size, refined by
        the session's CRF when it has one.

        Under no_grad, as predict_logits itself runs: the onnxruntime runtime may export and
        check a fixed-size graph during a call (FixedSizeGraphs), which wants plain tensors."""
        return self.labels_with_crf(images, self.crf)[0]

    def labels_with_crf(
        self, images: Sequence[Tensor] | Tensor, crf: CrfParams | None
    ) -> tuple[Tensor, float]:
        """(class ids N x H x W on the CPU, seconds spent in the CRF) with the CRF `crf`
        (None: none), whatever the session's default: `fcnseg serve` turns it on or off per
        request. The CRF's time is also added to `crf_timer`."""
        with torch.no_grad():
            logits = self.logits(self.normalize(images))
            if crf is None:
                return logits.argmax(1).cpu(), 0.0
            started = time.perf_counter()
            uint8 = torch.stack([as_uint8(image) for image in images])
            refined = refine_logits(uint8, logits, crf, self.crf_timer)
            return refined.argmax(1).cpu(), time.perf_counter() - started

    def segment(self, images: Sequence[Tensor] | Tensor) -> tuple[Tensor, Tensor | None]:
        """(class ids N x H x W, uncertainty N x H x W float in [0, 1] or None), on the CPU.

        The uncertainty (MC dropout only) is the predictive entropy of the mean probabilities
        over log(C) (inference.mc_dropout.predictive_entropy); the ids are the argmax of the
        mean, refined by the session's CRF when it has one."""
        if self.mc is None:
            return self.labels(images), None
        with torch.no_grad():
            probs = primary_output(self.head_probs(self.normalize(images)))
            uncertainty = mc_dropout.predictive_entropy(probs).cpu()
            if self.crf is None:
                return probs.argmax(1).cpu(), uncertainty
            uint8 = torch.stack([as_uint8(image) for image in images])
            log_probs = probs.clamp_min(_LOG_FLOOR).log()
            refined = refine_logits(uint8, log_probs, self.crf, self.crf_timer)
            return refined.argmax(1).cpu(), uncertainty

    def segment_each(self, images: Sequence[Tensor] | Tensor) -> list[tuple[Any, Any]]:
        """`segment` per image as NumPy: [(class ids H x W, uncertainty H x W or None)]."""
        labels, uncertainty = self.segment(images)
        if uncertainty is None:
            return [(ids, None) for ids in labels.numpy()]
        return list(zip(labels.numpy(), uncertainty.numpy(), strict=True))
