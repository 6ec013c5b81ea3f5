"""Common machinery of the official GFVC models (FOMM, CFTE, FV2V, DAC, HDAC, RDAC).

Each family module defines its torch networks and one :class:`OfficialModel` subclass. This
module holds what they share: config files, checkpoint loading, frame <-> tensor conversion
with the reference software's exact memory layouts, the key-frame cache and weight digests.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
import yaml
from torch import nn

from gfvc.errors import CheckpointError, InputError
from gfvc.models.base import MotionModel
from gfvc.models.official.checkpoint import extract_modules, load_modules, read_checkpoint
from gfvc.models.official.layers import fuse_for_inference

__all__ = [
    "OfficialModel",
    "frame_to_tensor",
    "load_config",
    "tensor_to_frame",
]

K = TypeVar("K")


def load_config(path: str | Path | None, family: str) -> dict[str, Any]:
    """Read an official ``<M>-256.yaml`` (or a gfvc copy) and return its ``model_params``.

    ``path`` None selects the packaged full-size config of ``family``. A yaml that holds the
    model_params sections at top level (no ``model_params`` key) is accepted too.
    """
    if path is None:
        text = (
            resources.files("gfvc.models.official")
            .joinpath(f"configs/{family}-256.yaml")
            .read_text()
        )
        where = f"packaged {family}-256.yaml"
    else:
        p = Path(path)
        if not p.is_file():
            raise CheckpointError(f"config {p} does not exist")
        text, where = p.read_text(), str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CheckpointError(f"config {where} is not valid YAML: {exc}") from None
    return params_from_config_dict(data, where)


def params_from_config_dict(data: Any, where: str = "config") -> dict[str, Any]:
    """``model_params`` of a full yaml dict (or the dict itself if it already is one)."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected a mapping at top level")
    params = data.get("model_params", data)
    if not isinstance(params, dict):
        raise CheckpointError(f"{where}: model_params must be a mapping")
    for section in ("common_params", "kp_detector_params", "generator_params"):
        if not isinstance(params.get(section), dict):
            raise CheckpointError(f"{where}: model_params.{section} is missing")
    _check_numbers(params, where)
    return copy.deepcopy(params)


MAX_CONFIG_INT = 16384  # largest integer a model configuration may hold (channels, blocks ...)
MAX_PARAMETERS = 500_000_000  # a configuration describing a bigger network is refused


def _check_numbers(tree: Any, where: str, path: str = "model_params") -> None:
    """Every number finite and every integer in 0..MAX_CONFIG_INT: a hostile config cannot
    make the model builder loop or allocate without bound."""
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            _check_numbers(v, where, f"{path}.{k}")
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            _check_numbers(v, where, f"{path}[{i}]")
    elif isinstance(tree, bool) or tree is None or isinstance(tree, str):
        return
    elif isinstance(tree, int):
        if not 0 <= tree <= MAX_CONFIG_INT:
            raise CheckpointError(f"{where}: {path} = {tree} is outside 0..{MAX_CONFIG_INT}")
    elif isinstance(tree, float):
        if not (np.isfinite(tree) and abs(tree) <= 1e6):
            raise CheckpointError(f"{where}: {path} = {tree} is not a sane number")
    else:
        raise CheckpointError(f"{where}: {path} has an unexpected {type(tree).__name__} value")


def check_buildable(cls: type[OfficialModel], params: Mapping[str, Any], options=None) -> None:
    """Build ``cls``'s networks for ``params`` on the meta device (nothing allocated) and
    refuse, with CheckpointError, a configuration that cannot be built or is absurdly big."""
    try:
        with torch.device("meta"):
            nets = cls.networks_for(params, options)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means the configuration is bad
        raise CheckpointError(
            f"{cls.family}: the model cannot be built from this configuration "
            f"({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    n = sum(p.numel() for net in nets.values() for p in net.parameters())
    if n > MAX_PARAMETERS:
        raise CheckpointError(
            f"{cls.family}: the configuration describes {n:,} parameters (limit {MAX_PARAMETERS:,})"
        )


def frame_to_tensor(frame: np.ndarray, layout: str = "channels_last_view") -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (1, 3, H, W) in [0, 1], exactly as the reference builds it.

    The value is ``float32(u8 / 255)`` with the division in float64. ``layout``:
    ``"channels_last_view"`` is the reference's inter-frame tensor (an NCHW view of an NHWC array,
    strides (3HW, 1, 3W, 3)); ``"contiguous"`` is its key-frame tensor (C-contiguous NCHW).
    CPU convolutions round slightly differently for the two layouts (~1e-6), so matching the
    layout is what makes features bit-identical to the reference.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    hwc = (frame / 255.0).astype(np.float32)
    if layout == "channels_last_view":
        return torch.from_numpy(np.ascontiguousarray(hwc)[np.newaxis]).permute(0, 3, 1, 2)
    if layout == "contiguous":
        return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1))[np.newaxis])
    raise ValueError(f"unknown layout {layout!r}")


def tensor_to_frame(x: torch.Tensor, rounding: str = "round") -> np.ndarray:
    """float (1, 3, H, W) in [0, 1] -> uint8 (H, W, 3).

    ``rounding="round"`` (gfvc default) rounds to nearest; ``"truncate"`` reproduces the
    reference decoders' ``(x * 255).astype(uint8)``.
    """
    arr = x.detach().to("cpu", torch.float32)[0].permute(1, 2, 0).numpy() * 255.0
    if rounding == "round":
        arr = np.rint(arr)
    elif rounding != "truncate":
        raise ValueError(f"unknown rounding {rounding!r}")
    return np.clip(arr, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ModelOptions:
    """Base of the per-family options dataclasses (documented in each family module).

    ``rounding``: "round" (gfvc) or "truncate" (the reference decoders' ``astype(uint8)``).
    """

    rounding: str = "round"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> ModelOptions:
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CheckpointError(
                f"unknown {cls.__name__} option(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return replace(cls(), **dict(data))


class OfficialModel(MotionModel, Generic[K]):
    """A MotionModel wrapping the torch networks of one official GFVC family.

    Subclasses set ``family`` (packaged config name), ``module_names`` (checkpoint top-level
    keys), ``options_class`` and implement ``build_networks``, ``analyse_tensor``,
    ``encode_key`` (the cached key-frame part of synthesis) and ``synthesize_tensor``.
    """

    family: ClassVar[str]
    options_class: ClassVar[type[ModelOptions]] = ModelOptions
    send_key_feature: ClassVar[bool] = False
    #: The networks only synthesis runs (sped up by :meth:`set_fast_inference`); the others
    #: analyse frames and keep the reference form.
    synthesis_nets: ClassVar[tuple[str, ...]] = ("generator",)
    module_names: ClassVar[tuple[str, ...]] = ("kp_detector", "generator")
    #: The analysis and synthesis networks of the default :meth:`build_networks`.
    detector_class: ClassVar[type[nn.Module]]
    generator_class: ClassVar[type[nn.Module]]
    num_kp: int

    def __init__(
        self,
        model_params: Mapping[str, Any],
        state: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        *,
        device: str = "cpu",
        size: int = 256,
        options: ModelOptions | Mapping[str, Any] | None = None,
        source: str = "checkpoint",
    ) -> None:
        self.model_params = copy.deepcopy(dict(model_params))
        self.size = size
        if isinstance(options, ModelOptions):
            self.options = options
        else:
            self.options = self.options_class.from_mapping(options)
        self.nets: dict[str, nn.Module] = self.build_networks(self.model_params)
        if state is not None:
            state = {name: self.remap_state(name, sd) for name, sd in state.items()}
            load_modules(self.nets, state, resizable=self.resizable_buffer, source=source)
        for net in self.nets.values():
            net.eval().requires_grad_(False)
        self.device = torch.device("cpu")
        self._digest: bytes | None = None
        self._key_cache: tuple[bytes, K] | None = None
        self._channels_last = False
        self._fast = True
        self.to(device)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        *,
        checkpoint: str | None = None,
        config: str | None = None,
        device: str = "cpu",
        size: int = 256,
        options: Mapping[str, Any] | None = None,
    ) -> OfficialModel:
        """Build from an official checkpoint (``.pth.tar``) and its yaml (packaged default)."""
        if size != 256:
            raise CheckpointError(
                f"{cls.family}: the official models are trained for 256x256 frames, not {size}"
            )
        if checkpoint is None:
            raise CheckpointError(
                f"{cls.family}: no checkpoint given; download the official {cls.family.upper()} "
                "weights and pass --checkpoint FILE.pth.tar"
            )
        params = load_config(config, cls.family)
        check_buildable(cls, params, options)
        ckpt = read_checkpoint(checkpoint)
        states = extract_modules(ckpt, cls.module_names, source=str(checkpoint))
        return cls(
            params, states, device=device, size=size, options=options, source=str(checkpoint)
        )

    @classmethod
    def random(
        cls,
        config: str | None = None,
        *,
        seed: int = 0,
        device: str = "cpu",
        options: Mapping[str, Any] | None = None,
    ) -> OfficialModel:
        """Randomly initialised model (benchmarks and tests only: the output is meaningless)."""
        torch.manual_seed(seed)
        return cls(load_config(config, cls.family), None, device=device, options=options)

    @classmethod
    def networks_for(
        cls, params: Mapping[str, Any], options: ModelOptions | Mapping[str, Any] | None = None
    ) -> dict[str, nn.Module]:
        """The family's torch networks for ``params`` with fresh (random) weights, nothing
        loaded (layout checks, benchmarks; works under ``torch.device("meta")``)."""
        bare = cls.__new__(cls)
        bare.size = 256
        bare.options = (
            options
            if isinstance(options, ModelOptions)
            else cls.options_class.from_mapping(options)
        )
        return bare.build_networks(copy.deepcopy(dict(params)))

    def build_networks(self, params: Mapping[str, Any]) -> dict[str, nn.Module]:
        """Construct the networks (names = checkpoint top-level keys); may set attributes.

        Default: ``detector_class`` and ``generator_class`` built from the yaml sections with
        the common parameters, the generator set to the options' ``align_corners``.
        """
        common = params["common_params"]
        kp = self.detector_class(**params["kp_detector_params"], **common)
        gen = self.generator_class(**params["generator_params"], **common)
        gen.set_align_corners(self.options.align_corners)  # type: ignore[attr-defined]
        self.num_kp = int(common["num_kp"])
        return {"kp_detector": kp, "generator": gen}

    def remap_state(
        self, module: str, state: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Translate key names of other library versions to the official ones (identity)."""
        return dict(state)

    def resizable_buffer(self, module: str, key: str) -> bool:
        """Buffers whose size depends on the data (none by default)."""
        return False

    # ------------------------------------------------------------------ identity
    def config_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "model_params": self.model_params,
            "options": asdict(self.options),
        }

    def weights_digest(self) -> bytes:
        """SHA-256 over every module's state dict (names, dtypes, shapes and raw bytes)."""
        if self._digest is None:
            h = hashlib.sha256()
            for name in self.module_names:
                for key, t in self.nets[name].state_dict().items():
                    t = t.detach().to("cpu").contiguous()
                    h.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)};".encode())
                    h.update(t.numpy().tobytes() if t.numel() else b"")
            self._digest = h.digest()
        return self._digest

    # ------------------------------------------------------------------ devices
    def to(self, device: str | torch.device) -> OfficialModel:
        self.device = torch.device(device)
        for net in self.nets.values():
            net.to(self.device)
        self._set_runtime_form()
        return self

    def reset(self) -> None:
        self._key_cache = None

    def set_channels_last(self, enabled: bool = True) -> OfficialModel:
        """Store every network's 2-D conv weights channels-last (NHWC), the analysis networks'
        included: ~15-25% faster on CPU (oneDNN).

        A runtime choice, not part of ``config_dict``: outputs change only by float rounding
        (~1e-6), and the default (off) keeps the reference software's memory layout for the
        analysis networks, which is what reproduces its features bit for bit. (The synthesis
        networks run channels-last anyway while :meth:`set_fast_inference` is on.)
        """
        self._channels_last = enabled
        self._set_runtime_form()
        return self

    def set_fast_inference(self, enabled: bool = True) -> OfficialModel:
        """Run the synthesis networks (:attr:`synthesis_nets`) in their inference form (on by
        default): batch norms folded into the convolutions, nearest upsampling merged into the
        convolution after it, channels-last weights, activations in place.

        A runtime choice, not part of ``config_dict``: the outputs differ from the reference
        form by float rounding only (well inside the conformance tolerances). The analysis
        networks, whose features are quantised and must match the reference bit for bit, are
        never changed. Off: the networks exactly as the reference software runs them.
        """
        self._fast = enabled
        self._set_runtime_form()
        return self

    def _set_runtime_form(self) -> None:
        for name, net in self.nets.items():
            fast = self._fast and name in self.synthesis_nets
            channels_last = self._channels_last or fast
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            for p in net.parameters():
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=fmt)
            fuse_for_inference(net, fast, channels_last)
        self._key_cache = None

    # ------------------------------------------------------------------ tensors
    def frame_tensor(self, frame: np.ndarray, layout: str = "channels_last_view") -> torch.Tensor:
        if frame.shape[:2] != (self.size, self.size):
            raise InputError(
                f"{self.family}: frame is {frame.shape[1]}x{frame.shape[0]}, model needs {self.size}x{self.size}"
            )
        return frame_to_tensor(frame, layout).to(self.device)

    def vector_tensors(self, vec: np.ndarray) -> dict[str, torch.Tensor]:
        """A feature vector as float32 tensors, one per field, shaped (1, *field.shape)."""
        return {
            name: torch.as_tensor(a, dtype=torch.float32, device=self.device).unsqueeze(0)
            for name, a in self.split_vector(np.asarray(vec, dtype=np.float64)).items()
        }

    @staticmethod
    def tensors_vector(*tensors: torch.Tensor) -> np.ndarray:
        """The first batch item of each tensor, flattened and joined: a float64 feature vector."""
        return torch.cat([t[0].reshape(-1) for t in tensors]).to("cpu", torch.float64).numpy()

    # ------------------------------------------------------------------ coding
    def analyse_tensor(self, x: torch.Tensor) -> Any:
        """The analysis network's output for a frame tensor (the keypoint detector's)."""
        with torch.inference_mode():
            return self.nets["kp_detector"](x)

    def feature_of(self, x: torch.Tensor) -> Any:
        """The transmitted feature of a frame tensor (what ``to_vector`` takes)."""
        return self.analyse_tensor(x)

    def analyse(self, frame: np.ndarray) -> np.ndarray:
        return self.to_vector(self.feature_of(self.frame_tensor(frame)))

    def analyse_key(self, key_frame: np.ndarray) -> np.ndarray:
        return self.to_vector(self.feature_of(self.frame_tensor(key_frame, "contiguous")))

    def to_vector(self, feature: Any) -> np.ndarray:
        raise NotImplementedError

    def from_vector(self, vec: np.ndarray) -> Any:
        raise NotImplementedError

    def synthesize_tensor(self, key_frame: np.ndarray, key_feature: Any, feature: Any) -> Any:
        """Raw generator outputs (a dataclass with ``prediction``) for tensor features."""
        raise NotImplementedError

    def synthesize(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> np.ndarray:
        out = self.synthesize_tensor(
            key_frame, self.from_vector(key_feature), self.from_vector(feature)
        )
        return tensor_to_frame(out.prediction, self.options.rounding)

    def key_encoding(self, key_frame: np.ndarray, key_feature: np.ndarray | None = None) -> K:
        """The cached key-frame encoding, recomputed only when the key frame's bytes (or the
        key feature, for models whose encoding depends on it) change."""
        arr = np.ascontiguousarray(key_frame)
        h = hashlib.sha1(arr.tobytes())
        h.update(str(arr.shape).encode())
        if key_feature is not None:
            h.update(np.ascontiguousarray(key_feature, dtype=np.float64).tobytes())
        tag = h.digest()
        if self._key_cache is None or self._key_cache[0] != tag:
            self._key_cache = None
            with torch.inference_mode():
                enc = self.encode_key(self.frame_tensor(arr, "contiguous"), key_feature)
            self._key_cache = (tag, enc)
        return self._key_cache[1]

    def encode_key(self, key: torch.Tensor, key_feature: np.ndarray | None) -> K:
        """Everything of the synthesis that depends on the key frame only."""
        raise NotImplementedError
