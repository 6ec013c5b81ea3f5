"""The encoder's eyes: score what the receiver will see and say when to send a new reference.

The encoder renders each frame from the integers it is about to send, as the decoder will
(``MotionModel.preview``), and compares it with the camera's frame. A new key frame is asked
for when the rendering can no longer serve:

* ``cut``: the camera's picture changed at once (a scene cut, another person);
* ``drift``: the whole rendered picture is far from the camera's;
* ``expression``: the eye and mouth openings are far off (teeth, eyes wide open, a blink the
  key frame cannot show), or the model says the eyes are open beyond what the key frame can
  show (it was coded with them closed or looking down);
* ``lighting``: the frame's brightness moved away from the key frame's;
* ``face-found``: the face tracker found the face again after losing it.

All scores are on 64x64 grey pictures (a few hundred microseconds per frame). With rate
control, drift, expression and lighting refreshes are sent only when the budget allows; cuts
and a face found again always are (a wrong face must not stay on screen).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gfvc.bitstream import KEY_REASONS

REASON = {name: i for i, name in enumerate(KEY_REASONS)}
_SMALL = 64


def small_grey(frame: np.ndarray) -> np.ndarray:
    """(64, 64) float32 luma of an (H, W, 3) uint8 frame, by box averaging."""
    h, w = frame.shape[:2]
    fy, fx = max(1, h // _SMALL), max(1, w // _SMALL)
    y = frame[: fy * _SMALL, : fx * _SMALL].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    return y.reshape(_SMALL, fy, _SMALL, fx).mean(axis=(1, 3))


def small_mask(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    fy, fx = max(1, h // _SMALL), max(1, w // _SMALL)
    m = mask[: fy * _SMALL, : fx * _SMALL].astype(np.float32)
    return m.reshape(_SMALL, fy, _SMALL, fx).max(axis=(1, 3)) > 0


def rendering_error(
    grey: np.ndarray, rendered: np.ndarray | None, regions: np.ndarray | None
) -> tuple[float, float]:
    """Mean |rendered - camera| over the picture and inside the eye and mouth openings
    (nan where unknown), ``grey`` being the camera's ``small_grey``."""
    err = region_err = float("nan")
    if rendered is not None:
        diff = np.abs(small_grey(rendered) - grey)
        err = float(diff.mean())
        if regions is not None:
            m = small_mask(regions)
            if m.any():
                region_err = float(diff[m].mean())
    return err, region_err


@dataclass
class WatchSettings:
    """Trigger thresholds, in 8-bit grey levels on 64x64 pictures (docs/control.md).

    Measured on real clips at 256x256: frame-to-frame change stays below 11 without a cut
    (below 32 on a very fast mover, lp_d12) and jumps above 25 at one; the rendered picture's
    error stays below 19 and brightness within 7 of the key frame; the eye/mouth error stays
    below 38 on plain talking heads and passes 40 on expressive faces.
    """

    cut: float = 20.0  # mean change between two camera frames that reads as a cut
    cut_ratio: float = 4.0  # ... and that many times the shot's median frame-to-frame change
    cut_alone: float = 35.0  # a cut within five frames of a key frame (no motion measured yet)
    cut_error: float = 18.0  # ... and the rendering must have failed too, where there is one
    drift: float = 24.0  # error of the rendered picture that asks for a new key frame
    region: float = 40.0  # ... inside the eye and mouth openings
    lighting: float = 15.0  # brightness change against the key frame
    min_gap: int = 25  # frames between a key frame and a drift/expression/lighting refresh
    #: the rendering is checked for drift and expression on every this many frames (and on
    #: every frame that may be a cut): rendering costs ~5 ms, a late refresh by a few frames
    #: costs nothing
    render_every: int = 4


@dataclass
class Score:
    """What the encoder measured for one frame (grey levels)."""

    error: float  # mean |rendered - camera| over the picture
    region_error: float  # ... inside the eye and mouth openings (nan when unknown)
    change: float  # mean |camera - previous camera frame|
    brightness: float  # |mean camera brightness - the key frame's|
    tracked: bool  # the model's tracker saw the face
    eyes_beyond: bool = False  # eyes more open than the reference can show (the model says)


class Watch:
    """Per-stream trigger state; ``key`` at every key frame, ``check`` at every other frame."""

    def __init__(self, settings: WatchSettings | None = None) -> None:
        self.s = settings or WatchSettings()
        self._prev: np.ndarray | None = None
        self._key_brightness = 0.0
        self._since_key = 0
        self._changes: list[float] = []
        self._lost = False
        # this frame's grey picture and change from the previous one (needs_rendering and
        # score both ask for them)
        self._seen: tuple[np.ndarray, np.ndarray, float] | None = None
        self.last: Score | None = None
        #: reason name -> number of key frames it triggered
        self.counts: dict[str, int] = {}

    def key(self, camera: np.ndarray) -> None:
        """A key frame was sent from ``camera``: baselines start over."""
        g = self._observe(camera)[0]
        self._seen = None  # the frame is done (a caller may reuse its array for the next)
        self._prev, self._key_brightness = g, float(g.mean())
        self._changes = []
        self._since_key = 0
        self._lost = False

    def needs_rendering(self, camera: np.ndarray) -> bool:
        """Whether ``check`` needs this frame's rendering: the picture changed enough to be
        a cut (the rendering tells a cut from fast motion), or a periodic drift/expression
        check is due."""
        if self._observe(camera)[1] > self._cut_limit():
            return True
        return self._since_key + 1 >= self.s.min_gap and self._since_key % self.s.render_every == 0

    def brightness(self, camera: np.ndarray) -> float:
        """Mean grey level of ``camera`` as the lighting trigger measures it."""
        return float(self._observe(camera)[0].mean())

    def _observe(self, camera: np.ndarray) -> tuple[np.ndarray, float]:
        """``small_grey(camera)`` and its mean change from the previous frame, computed once
        per frame."""
        if self._seen is None or self._seen[0] is not camera:
            g = small_grey(camera)
            change = float(np.abs(g - self._prev).mean()) if self._prev is not None else 0.0
            self._seen = (camera, g, change)
        return self._seen[1], self._seen[2]

    def _cut_limit(self) -> float:
        """The change that reads as a cut: far above this shot's own motion (fast movers
        change a lot), or a fixed level just after a key frame (no motion measured yet)."""
        s = self.s
        if len(self._changes) >= 5:
            return max(s.cut, s.cut_ratio * float(np.median(self._changes[-25:])))
        return s.cut_alone

    def score(
        self,
        camera: np.ndarray,
        rendered: np.ndarray | None,
        regions: np.ndarray | None,
        tracked: bool,
        eyes_beyond: bool = False,
    ) -> Score:
        g, change = self._observe(camera)
        err, region_err = rendering_error(g, rendered, regions)
        brightness = abs(float(g.mean()) - self._key_brightness)
        self._prev = g
        return Score(err, region_err, change, brightness, tracked, eyes_beyond)

    def serves(
        self,
        camera: np.ndarray,
        rendered: np.ndarray,
        regions: np.ndarray | None,
        reference_brightness: float | None,
        eyes_beyond: bool = False,
    ) -> float | None:
        """The error of a bank reference's rendering of ``camera`` when it passes every
        test a key frame's rendering passes (no cut, drift, expression or lighting
        trigger), else None. ``reference_brightness``: that of the camera frame the
        reference was coded from."""
        s = self.s
        g = self._observe(camera)[0]
        err, region_err = rendering_error(g, rendered, regions)
        if (
            reference_brightness is not None
            and abs(float(g.mean()) - reference_brightness) > s.lighting
        ):
            return None
        if not err <= s.cut_error or self._expression_off(region_err, eyes_beyond):
            return None
        return err

    def recalled(self, camera: np.ndarray, reference_brightness: float | None) -> None:
        """A bank reference was recalled for ``camera``: baselines start over, brightness
        against that reference's own camera frame."""
        self.key(camera)
        if reference_brightness is not None:
            self._key_brightness = reference_brightness

    def check(self, sc: Score) -> str | None:
        """The reason to send a key frame now, or None."""
        s = self.s
        self.last = sc
        self._seen = None  # the frame is done (a caller may reuse its array for the next)
        self._since_key += 1
        reason = None
        if sc.change > self._cut_limit() and not sc.error <= s.cut_error:  # nan: none rendered
            reason = "cut"
        self._changes.append(sc.change)
        del self._changes[:-25]  # only the recent ones count: memory flat on long inputs
        if not sc.tracked:
            self._lost = True
        elif self._lost:
            reason = reason or "face-found"
        if reason is None and sc.tracked and self._since_key >= s.min_gap:
            reason = self._rendering_verdict(sc)
        if reason:
            self.counts[reason] = self.counts.get(reason, 0) + 1
        return reason

    def _rendering_verdict(self, sc: Score) -> str | None:
        s = self.s
        if sc.brightness > s.lighting:
            return "lighting"
        if sc.error > s.drift:  # nan (nothing rendered) compares False
            return "drift"
        if self._expression_off(sc.region_error, sc.eyes_beyond):
            return "expression"
        return None

    def _expression_off(self, region_error: float, eyes_beyond: bool) -> bool:
        """The eye and mouth openings are rendered too far off (nan: unknown, compares False),
        or the model says the eyes are open beyond what the reference can show."""
        return region_error > self.s.region or eyes_beyond
