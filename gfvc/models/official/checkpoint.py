"""Loading official GFVC checkpoints safely and strictly.

Why this module exists: the upstream loaders use ``torch.load`` with full unpickling (which can
run arbitrary code) and, in the v1 software, ``strict=False`` for the generator, which silently
leaves a network random when a key does not match. Here:

* files are read with ``torch.load(weights_only=True)``; a file that needs code to unpickle is
  refused with an explanation instead of being executed;
* the official top-level layout ``{"kp_detector": sd, "generator": sd[, "he_estimator": sd]}``
  is expected (extra top-level entries written by training, like optimisers, are ignored);
  gfvc golden files, which keep that layout under ``"state_dict"``, are accepted too;
* a ``module.`` prefix (DataParallel) is stripped;
* every module is loaded strictly, and any mismatch is reported as one line per key in a
  :class:`~gfvc.errors.CheckpointError`.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gfvc.errors import CheckpointError

__all__ = [
    "StateDict",
    "extract_modules",
    "load_module_strict",
    "load_modules",
    "read_checkpoint",
    "strip_prefix",
]

StateDict = dict[str, torch.Tensor]

#: How many mismatch lines a CheckpointError lists before summarising the rest.
MAX_REPORT_LINES = 40


#: Globals that only rebuild plain numbers (numpy scalars such as a saved ``epoch``); a
#: checkpoint needing nothing else is loaded with these allowed.
_NUMPY_DATA_GLOBALS = {
    "numpy.dtype",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
}


def _numpy_data_globals(names: list[str]) -> list[Any] | None:
    """Allowlist for a checkpoint whose only non-tensor globals (``names``) are numpy scalar and
    dtype rebuild helpers; None if it needs anything else."""
    import numpy as np

    if not names or not all(
        n in _NUMPY_DATA_GLOBALS or n.startswith("numpy.dtypes.") for n in names
    ):
        return None
    out: list[Any] = [np.dtype]
    for n in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            out.append((importlib.import_module(n).scalar, f"{n}.scalar"))
        except ImportError:  # pragma: no cover - depends on the numpy version
            pass
    # dtype classes (numpy >= 1.25) are needed lazily while unpickling the scalars
    out.extend(
        getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", object())) if n.endswith("DType")
    )
    return out


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file without executing code (``weights_only=True``, on CPU).

    Numpy scalars (e.g. an ``epoch`` saved as ``np.int64``) are allowed; anything else that
    would need code to unpickle is refused with the list of what it would import.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            allowed = _numpy_data_globals(names)
            if allowed is None:
                shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
                raise CheckpointError(
                    f"checkpoint {path} cannot be read safely: it contains pickled Python objects "
                    f"({shown or 'unknown'}) that would have to run code to load. gfvc only loads "
                    "weights (torch.load(weights_only=True)). If you trust the file, re-save just the "
                    "state dicts, e.g. torch.save({k: v for k, v in torch.load(p, weights_only=False)."
                    "items() if k in ('kp_detector', 'generator', 'he_estimator')}, out)"
                ) from None
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file fails deep inside torch's unpickler
        raise CheckpointError(
            f"checkpoint {path} is not a readable torch file ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of state dicts"
        )
    return obj


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> StateDict:
    """Remove ``prefix`` from every key that has it (DataParallel-saved weights)."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def extract_modules(
    ckpt: Mapping[str, Any], names: Sequence[str], source: str = "checkpoint"
) -> dict[str, StateDict]:
    """Pick the per-module state dicts ``names`` out of an official checkpoint dict."""
    root: Mapping[str, Any] = ckpt
    if not any(n in ckpt for n in names) and isinstance(ckpt.get("state_dict"), Mapping):
        root = ckpt["state_dict"]
    if all(isinstance(k, str) and k.startswith("module.") for k in root):
        root = strip_prefix(root)  # a whole DataParallel-wrapped {module.<name>.*} dict
    missing = [n for n in names if n not in root]
    if missing:
        found = ", ".join(sorted(map(str, root))) or "nothing"
        raise CheckpointError(
            f"{source}: top-level entries {missing} are missing (found: {found}); an official "
            f"checkpoint has {list(names)}"
        )
    out: dict[str, StateDict] = {}
    for n in names:
        sd = root[n]
        if not isinstance(sd, Mapping) or not all(torch.is_tensor(v) for v in sd.values()):
            raise CheckpointError(f"{source}: entry {n!r} is not a state dict of tensors")
        out[n] = strip_prefix(sd)
    return out


def _shape(t: torch.Tensor) -> str:
    return "[" + ",".join(str(s) for s in t.shape) + "]"


def load_module_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    name: str,
    *,
    resizable: Callable[[str], bool] | None = None,
    source: str = "checkpoint",
) -> None:
    """Load ``state`` into ``module`` or raise a per-key report.

    A missing ``num_batches_tracked`` is tolerated (it does not affect inference; torch does the
    same). ``resizable(key)`` marks buffers whose size is data dependent (e.g. entropy-model
    CDF tables): they are resized to the stored tensor instead of being reported.
    """
    expected = module.state_dict()
    lines: list[str] = []
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            lines.append(f"missing    {name}.{key} {_shape(tensor)}")
        elif tuple(state[key].shape) != tuple(tensor.shape) and not (resizable and resizable(key)):
            lines.append(
                f"mis-shaped {name}.{key}: checkpoint {_shape(state[key])}, model {_shape(tensor)}"
            )
    for key, tensor in state.items():
        if key not in expected:
            lines.append(f"unexpected {name}.{key} {_shape(tensor)}")
    if lines:
        shown = lines[:MAX_REPORT_LINES]
        if len(lines) > len(shown):
            shown.append(f"... and {len(lines) - len(shown)} more")
        raise CheckpointError(
            f"{source}: {name} does not match the model built from the config "
            f"({len(lines)} problem(s)); wrong config for this checkpoint?\n" + "\n".join(shown)
        )
    if resizable:
        for key, tensor in expected.items():
            if resizable(key) and tuple(state[key].shape) != tuple(tensor.shape):
                _set_buffer(module, key, torch.empty_like(state[key]))
    full = dict(state)
    for key, tensor in expected.items():
        full.setdefault(key, tensor)  # only num_batches_tracked can be absent here
    module.load_state_dict(full, strict=True)


def _set_buffer(module: nn.Module, key: str, value: torch.Tensor) -> None:
    path, _, attr = key.rpartition(".")
    owner = module.get_submodule(path) if path else module
    owner.register_buffer(attr, value, persistent=True)


def load_modules(
    modules: Mapping[str, nn.Module],
    states: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    resizable: Callable[[str, str], bool] | None = None,
    source: str = "checkpoint",
) -> None:
    """Strictly load every named module; collects all modules' problems into one error."""
    errors: list[str] = []
    for name, module in modules.items():
        try:
            load_module_strict(
                module,
                states[name],
                name,
                resizable=(lambda k, n=name: resizable(n, k)) if resizable else None,
                source=source,
            )
        except CheckpointError as exc:
            errors.append(str(exc))
    if errors:
        raise CheckpointError("\n".join(errors))
