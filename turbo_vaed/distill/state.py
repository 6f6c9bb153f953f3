"""Resumable training state in safe formats: tensors in safetensors, everything else in JSON.

Nothing here unpickles: a checkpoint folder holds ``model.safetensors`` (student + alignment heads),
``training.safetensors`` (optimiser/EMA/discriminator tensors, torch and CUDA RNG states, numpy's RNG key) and
``state.json`` (step, settings, optimiser hyper-parameters, the Python/numpy/data RNG states), written last, so a
folder without it is incomplete. Saves go to ``checkpoint.tmp`` and are renamed into place; a kill between the
renames leaves ``checkpoint.old`` or a complete ``checkpoint.tmp``, which :func:`recover` puts back.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from turbo_vaed.errors import UserError

FORMAT = "turbovaed.distill-state/1"
MODEL_FILE = "model.safetensors"
TENSORS_FILE = "training.safetensors"
STATE_FILE = "state.json"
FIX = "start a new run without --resume (or with another -o)"


# ---------------------------------------------------------------------------------------------- flattening


def flatten_state_dict(sd: dict, prefix: str, tensors: dict[str, torch.Tensor]) -> object:
    """A nested state dict (optimiser, scaler) as JSON; its tensors go into ``tensors`` under ``prefix``."""

    def walk(v, path: str):
        if isinstance(v, torch.Tensor):
            key = f"{prefix}/{path}"
            tensors[key] = v.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(v, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(x, f"{path}.{i}")]
                                 for i, (k, x) in enumerate(v.items())]}
        if isinstance(v, list | tuple):
            return {"__list__" if isinstance(v, list) else "__tuple__": [walk(x, f"{path}.{i}")
                                                                         for i, x in enumerate(v)]}
        if v is None or isinstance(v, bool | int | str):
            return v
        if isinstance(v, float):
            if not np.isfinite(v):
                return {"__float__": repr(v)}
            return v
        raise UserError(f"cannot save the training state: {type(v).__name__} at {prefix}/{path} is not a tensor "
                        "or a plain value")

    return walk(sd, "s")


def unflatten_state_dict(doc: object, tensors: dict[str, torch.Tensor], source: str) -> object:
    """Inverse of :func:`flatten_state_dict` (strict: unknown markers or missing tensors are one-line errors)."""

    def walk(v):
        if isinstance(v, dict):
            if set(v) == {"__tensor__"}:
                key = v["__tensor__"]
                if key not in tensors:
                    raise UserError(f"{source}: tensor {key} is missing from {TENSORS_FILE}: {FIX}")
                return tensors[key]
            if set(v) == {"__dict__"}:
                return {walk(k): walk(x) for k, x in v["__dict__"]}
            if set(v) == {"__list__"}:
                return [walk(x) for x in v["__list__"]]
            if set(v) == {"__tuple__"}:
                return tuple(walk(x) for x in v["__tuple__"])
            if set(v) == {"__float__"} and v["__float__"] in ("nan", "inf", "-inf"):
                return float(v["__float__"])
            raise UserError(f"{source}: unknown entry in {STATE_FILE}: {FIX}")
        if isinstance(v, list):
            raise UserError(f"{source}: unknown entry in {STATE_FILE}: {FIX}")
        return v

    try:
        return walk(doc)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {STATE_FILE} is corrupt: {FIX}") from None


# ---------------------------------------------------------------------------------------------- RNG states


def capture_rng(tensors: dict[str, torch.Tensor]) -> dict:
    """torch (CPU, CUDA) RNG states into ``tensors``; Python's and numpy's global RNG states as JSON."""
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, internal, gauss_next = random.getstate()
    return {"python": [version, list(internal), gauss_next],
            "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0}


def restore_rng(doc: dict, tensors: dict[str, torch.Tensor], source: str) -> None:
    if not isinstance(doc, dict):
        raise UserError(f"{source}: the saved RNG states are missing: {FIX}")
    try:
        torch.set_rng_state(tensors["rng/torch"].to(torch.uint8))
        n = int(doc.get("cuda_devices", 0))
        if n and torch.cuda.is_available():
            states = [tensors[f"rng/cuda/{i}"].to(torch.uint8) for i in range(n)]
            torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
        nd = doc["numpy"]
        np.random.set_state((str(nd["kind"]), tensors["rng/numpy"].numpy().astype(np.uint32), int(nd["pos"]),
                             int(nd["has_gauss"]), float(nd["gauss"])))
        version, internal, gauss_next = doc["python"]
        random.setstate((int(version), tuple(int(i) for i in internal), gauss_next))
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError):
        raise UserError(f"{source}: the saved RNG states are corrupt: {FIX}") from None


# ---------------------------------------------------------------------------------------------- folders


def write_checkpoint(folder: Path, model_state: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                     doc: dict) -> None:
    """Write a complete checkpoint into ``folder`` (created; ``state.json`` last)."""
    from safetensors.torch import save_file

    from turbo_vaed.guards import dumps_json

    folder.mkdir(parents=True, exist_ok=False)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(folder / MODEL_FILE))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / TENSORS_FILE))
    (folder / STATE_FILE).write_text(dumps_json({"format": FORMAT, **doc}, str(folder / STATE_FILE)))


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a checkpoint whose ``state.json`` (written last) is present and ours."""
    f = folder / STATE_FILE
    if not f.is_file() or not (folder / MODEL_FILE).is_file() or not (folder / TENSORS_FILE).is_file():
        return False
    try:
        return json.loads(f.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def recover(ck: Path) -> str | None:
    """Make ``ck`` the newest complete checkpoint left by an interrupted save; says what was done (or None).

    A save writes ``ck.tmp``, renames ``ck`` -> ``ck.old`` and ``ck.tmp`` -> ``ck``, then removes ``ck.old``.
    """
    tmp, old = ck.with_name(ck.name + ".tmp"), ck.with_name(ck.name + ".old")
    note = None
    if not is_complete(ck):
        for cand, what in ((tmp, "the finished save in"), (old, "the previous checkpoint")):
            if is_complete(cand):
                if ck.exists():
                    shutil.rmtree(ck, ignore_errors=True)
                cand.rename(ck)
                note = f"recovered {what} {cand.name} (a save was interrupted)"
                break
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)
    return note


def read_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(model state, training tensors, state.json) of a complete checkpoint; one-line errors otherwise."""
    from safetensors.torch import load_file

    from turbo_vaed.guards import read_json, reading

    doc = read_json(folder / STATE_FILE, "training state", max_bytes=64 * 2**20, fix=FIX)
    if doc.get("format") != FORMAT:
        raise UserError(f"{folder} is not a {FORMAT} checkpoint (written by another turbovaed?): {FIX}")
    with reading(folder / MODEL_FILE, "checkpoint", FIX):
        model = load_file(str(folder / MODEL_FILE))
    with reading(folder / TENSORS_FILE, "checkpoint", FIX):
        tensors = load_file(str(folder / TENSORS_FILE))
    return model, tensors, doc
