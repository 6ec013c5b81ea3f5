"""The one interface every motion model implements.

Data flow of generative face video coding, and where a ``MotionModel`` sits in it::

    encoder:  frame --analyse--> Feature --to_vector--> float vector --(features/: predict,
              quantize, entropy code)--> bits
    decoder:  bits --> float vector --from_vector--> Feature --synthesize(key_frame,
              key_feature, feature)--> frame

Conventions at this boundary (all models): frames are ``numpy`` arrays of shape (H, W, 3),
dtype uint8, RGB, with H == W == ``model.size``. Feature vectors are 1-D float64 arrays of
length ``model.dim``, laid out field by field as ``model.fields`` lists them (C order inside
each field). Quantization and entropy coding live in ``gfvc.features``, never in a model.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

FieldKind = Literal["coordinates", "matrix", "vector"]


@dataclass(frozen=True)
class FeatureField:
    """One typed array inside a feature vector.

    ``kind`` tells how the array maps onto the generative face video SEI message:
    ``coordinates`` are keypoints (shape (K, 2) or (K, 3), x then y [then z]), ``matrix`` is a
    stack of matrices (shape (N, rows, cols)), ``vector`` is anything else.
    """

    name: str
    kind: FieldKind
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class MotionModel(abc.ABC):
    """A generative face model that codes motion as a compact feature per frame.

    Subclasses set the class constants, implement the abstract methods and are registered
    with ``@register_motion_model(name)`` in ``gfvc.models.registry``.
    """

    #: Registry name (stable, lower case, used on the command line).
    name: ClassVar[str]
    #: Model id written in the bitstream header; fixed in docs/bitstream.md, never reused.
    model_id: ClassVar[int]
    #: Default quantization step ("Qstep": residuals are coded as round(r * qstep)).
    default_qstep: ClassVar[float]
    #: True when the key-frame feature is sent in the key-frame unit (as integers on the
    #: quantization grid) instead of being re-derived from the decoded key frame at the
    #: decoder. Needed whenever analysis can differ between machines (mediapipe, float CNNs).
    send_key_feature: ClassVar[bool] = True
    #: Encoder dead zone in quantization steps (0.5: plain rounding, the reference).
    default_deadzone: ClassVar[float] = 0.5
    #: Key-frame codec used when the user names none.
    default_keyframe_codec: ClassVar[str] = "x265"
    #: Largest magnitude a decoded feature value may have; a unit that reconstructs beyond it
    #: (or to a non-finite value) is corrupt, refused before it reaches synthesis.
    max_abs_feature: ClassVar[float] = 1e4

    #: Frame side length in pixels (square frames).
    size: int = 256

    # ------------------------------------------------------------------ construction
    @classmethod
    def default_checkpoint(cls) -> Path | None:
        """The packaged weights ``create`` loads when given no checkpoint (None: none)."""
        return None

    @classmethod
    @abc.abstractmethod
    def create(
        cls,
        *,
        checkpoint: str | None = None,
        config: str | None = None,
        device: str = "cpu",
        size: int = 256,
    ) -> MotionModel:
        """Build a ready-to-use model. Learned models load ``checkpoint`` (and ``config``) and
        raise ``CheckpointError`` with a one-line reason when they cannot."""

    # ------------------------------------------------------------------ layout
    @property
    @abc.abstractmethod
    def fields(self) -> tuple[FeatureField, ...]:
        """The typed arrays of one feature vector, in vector order."""

    @property
    def dim(self) -> int:
        """Number of scalars per frame."""
        return sum(f.size for f in self.fields)

    def split_vector(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        """Cut a flat vector into its named, shaped fields."""
        vec = np.asarray(vec)
        if vec.shape[-1] != self.dim:
            raise ValueError(
                f"{self.name}: feature vector has {vec.shape[-1]} values, expected {self.dim}"
            )
        out, at = {}, 0
        for f in self.fields:
            out[f.name] = vec[..., at : at + f.size].reshape(*vec.shape[:-1], *f.shape)
            at += f.size
        return out

    # ------------------------------------------------------------------ identity
    @abc.abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """Everything that changes the decoded output, as plain JSON-able data."""

    def weights_digest(self) -> bytes:
        """Digest of the learned weights (empty for models without weights)."""
        return b""

    def match_stream(self, model_hash: bytes | None) -> bool:
        """Set the model up to decode a stream whose header carries ``model_hash`` (None: to
        code a new stream); False when it cannot. Models whose decoding rules changed over
        time keep the earlier rules for the streams that name them."""
        return model_hash is None or self.config_hash() == model_hash

    def config_hash(self) -> bytes:
        """8 bytes written in the bitstream header so a decoder can refuse a mismatched model."""
        import json

        h = hashlib.sha256(json.dumps(self.config_dict(), sort_keys=True).encode())
        h.update(self.weights_digest())
        return h.digest()[:8]

    # ------------------------------------------------------------------ coding
    @abc.abstractmethod
    def analyse(self, frame: np.ndarray) -> np.ndarray:
        """Encoder side: one frame (H, W, 3) uint8 -> feature vector (dim,) float64."""

    def analyse_key(self, key_frame: np.ndarray) -> np.ndarray:
        """Feature of the *decoded* key frame (the prediction start of every later frame)."""
        return self.analyse(key_frame)

    @abc.abstractmethod
    def synthesize(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> np.ndarray:
        """Decoder side: animate the decoded key frame to the pose/expression of ``feature``.

        ``key_frame`` is (H, W, 3) uint8; both features are (dim,) float64 vectors as
        reconstructed by the decoder. Returns (H, W, 3) uint8.
        """

    #: True when ``preview`` renders what the enhancement layer's fusion network was trained
    #: on (the landmark model's mesh warp), so streams of this model may carry the layer.
    fusion_ready: ClassVar[bool] = False

    #: True when ``preview`` is cheap enough for the encoder to run on every frame.
    cheap_preview: ClassVar[bool] = False

    def preview(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Encoder: what the decoder will show for ``feature`` (or a cheaper rendering close
        to it) and a (H, W) mask of the eye and mouth openings (None when the model has no
        such regions). Needs ``load_key_side_info`` for the current key frame first."""
        return self.synthesize(key_frame, key_feature, feature), None

    def fusion_inputs(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray, guide: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Decoder, enhancement layer: what the fusion network animates from (``preview``'s
        picture) and, with ``guide``, (C, H, W) hints for a network trained with them
        (where the warp had to change the key frame's openings; None: the model has none)."""
        return self.preview(key_frame, key_feature, feature)[0], None

    def eyes_and_mouth(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Encoder: the last analysed frame's eye and mouth points ((N, 2) pixels), where
        the base layer puts its detail (``gfvc.enhance.fovea``); None: the model has none."""
        return None

    @property
    def tracking(self) -> bool:
        """Encoder: whether the last ``analyse`` saw the face (models without a tracker: True)."""
        return True

    def eyes_beyond_reference(self) -> bool:
        """Encoder, after ``analyse`` and ``load_key_side_info``: the analysed frame's eyes
        are clearly more open than the reference's, which a warp of the reference cannot
        show (models that cannot tell: False)."""
        return False

    def key_side_info(self, key_feature: np.ndarray) -> bytes:
        """Encoder, right after analysing a key frame: extra data the decoder needs for this
        key frame (sent once in the key unit), e.g. the key frame's own landmarks. The
        decoder must not derive such data itself when its source can differ between
        machines. ``key_feature`` is the key feature as the decoder will reconstruct it."""
        return b""

    def load_key_side_info(self, data: bytes, key_feature: np.ndarray) -> None:
        """Decoder: receive what ``key_side_info`` produced for the current key frame.

        Must check everything before changing any state (raise ``BitstreamError`` first), so
        a corrupt key unit leaves the decoder exactly as it was."""
        if data:
            from gfvc.errors import BitstreamError

            raise BitstreamError(
                f"key-frame unit carries {len(data)} bytes the {self.name} model does not use"
            )

    def reset(self) -> None:
        """Forget per-sequence state (trackers, smoothing, cached key-frame encodings).

        Both sides call it at every key frame, so nothing before a key frame can influence
        what follows it. Must not forget what ``load_key_side_info`` just received."""

    def begin_stream(self) -> None:
        """Forget everything from earlier streams, trackers' own history included (an
        encoder calls it at its start): a model reused for a second stream codes it exactly
        as a fresh one would. ``reset`` alone keeps what a tracker may carry across key
        frames within a stream."""
        self.reset()

    def to(self, device: str) -> MotionModel:
        """Move to a torch device; models without torch parts ignore it."""
        return self
