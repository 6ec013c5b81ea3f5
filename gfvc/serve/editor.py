"""The Edit tab: one still key frame, re-synthesised with head pose and expression changed.

The key frame is analysed once (its feature and the landmarks the decoder keeps as side
information); every slider move then changes the key feature by name and renders it with
the model's own synthesis, exactly what a receiver applying the same edit would show.
Requests arrive faster than they render while a slider is dragged: only the newest waits,
older ones are dropped.

Names, ranges (what the model met in training) and the edit itself come from
``gfvc.edit``, the same code ``gfvc edit`` applies to decoded streams.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from gfvc.codec import build_model
from gfvc.edit import FeatureEdit, apply_edits, editable_components
from gfvc.errors import InputError
from gfvc.serve.media import Latest, Stopped, Worker, jpeg_b64


def parse_values(values: object, allowed: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The page's slider values, checked (known names, finite numbers: InputError else) and
    held inside each component's range."""
    if not isinstance(values, dict):
        raise InputError("edit values must be an object of name: number")
    out = {}
    for name, v in values.items():
        if name not in allowed:
            raise InputError(f"unknown edit component {name!r}")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InputError(f"edit value of {name} must be a finite number")
        lo, hi = allowed[name]
        out[name] = min(max(float(v), lo), hi)  # a slider's rounding may step just past an end
    return out


class KeyEditor:
    """A key frame and a model loaded with it, ready to render edited features."""

    def __init__(self, key_frame: np.ndarray, model: str = "landmark", checkpoint=None):
        self.model = build_model(model, checkpoint=checkpoint)
        self.components = editable_components(self.model)
        self.frame = key_frame
        self.model.reset()
        self.feature = self.model.analyse(key_frame)
        side = self.model.key_side_info(self.feature)  # the landmarks a receiver would get
        self.model.load_key_side_info(side, self.feature)
        names = list(self.model.feature_names)  # type: ignore[attr-defined]
        # where the sliders start: the key frame's own values, inside the allowed ranges
        self.values = parse_values(
            {n: float(self.feature[names.index(n)]) for n in self.components}, self.components
        )

    def render(self, values: dict[str, float]) -> np.ndarray:
        edits = [FeatureEdit(n, "set", v) for n, v in values.items()]
        feature = apply_edits(self.model, self.feature, edits, 0)
        return self.model.synthesize(self.frame, self.feature, feature)


class EditWorker(Worker):
    """One tab's Edit session in its own thread: newest request first, stale ones dropped."""

    thread_name = "gfvc-edit"

    def __init__(self, load: Callable[[], np.ndarray], send: Callable[[str], None], **model):
        super().__init__(send)
        self.inbox: Latest[tuple[int, dict]] = Latest()
        self._load, self._model = load, model

    def request(self, request_id: int, values: dict) -> None:
        self.inbox.put((request_id, values))

    def stop(self) -> None:
        self.inbox.close()

    def _run(self) -> None:
        try:
            editor = KeyEditor(self._load(), **self._model)
            self._emit(
                {
                    "type": "edit_ready",
                    "components": {k: [lo, hi] for k, (lo, hi) in editor.components.items()},
                    "values": {k: round(v, 3) for k, v in editor.values.items()},
                    "image": jpeg_b64(editor.frame),
                }
            )
            while True:
                rid, values = self.inbox.get()
                t0 = time.perf_counter()
                try:
                    frame = editor.render(parse_values(values, editor.components))
                except InputError as e:
                    self._emit({"type": "error", "message": str(e)})
                    continue
                ms = 1000 * (time.perf_counter() - t0)
                self._emit(
                    {"type": "edit_frame", "id": rid, "image": jpeg_b64(frame), "ms": round(ms, 1)}
                )
        except Stopped:
            pass
        except Exception as e:
            self._report(e)
