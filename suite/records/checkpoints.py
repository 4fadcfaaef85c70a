"""Framework-neutral checkpoints: one ``.npz`` file that every backend writes and reads alike.

Layout of a checkpoint (a plain, uncompressed NumPy ``.npz`` archive; no pickles)::

    "<canonical name>"  one array per parameter and state array of the model, exactly as
                        `Trainer.get_weights` returns them: the names and layouts of
                        `fwbench.layers` (``"0.weight"`` OIHW, ``"3.weight"`` dense (in, out),
                        ``"1.gamma"``, ``"1.running_mean"``, ``"4.body.0.weight"``,
                        ``"4.shortcut.bias"`` ...), BatchNorm running statistics included,
                        in the training dtype (float32 or float64).
    "__meta__"          a 0-d unicode array holding one JSON object:
                        {"format": "fwbench-checkpoint", "format_version": 1,
                         "fwbench": version, "backend": "torch", "task": "cnn_mnist",
                         "dataset": "mnist_5k", "dtype": "float32",
                         "input_shape": [1, 28, 28], "num_classes": 10,
                         "config": {the resolved task spec, as in a result record},
                         "created_at": ISO time, ...extra}

Read it without fwbench: ``z = np.load(path); z["0.weight"]; json.loads(str(z["__meta__"]))``.

Loading into another model (``model.init_from``) takes every array whose name *and* shape match
and keeps the canonical initial value of the others (`merge_weights`): a head whose class count
or input size differs is re-initialised, and the record lists what was loaded and what skipped.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SpecError

META_KEY = "__meta__"
FORMAT = "fwbench-checkpoint"
FORMAT_VERSION = 1
INIT_FROM_KEY = "model.init_from"


@dataclass(frozen=True)
class Checkpoint:
    """The arrays of a checkpoint by canonical name, and its ``__meta__`` dictionary."""

    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, weights: dict[str, np.ndarray], *, backend: str, task: str,
                    config: dict[str, Any] | None = None, dtype: str | None = None,
                    input_shape: tuple[int, ...] | list[int] = (), num_classes: int | None = None,
                    **extra: Any) -> Path:
    """Write ``weights`` (canonical names and layouts) and their metadata to ``path`` atomically.

    The archive goes to a temporary file in the same folder first and is renamed into place, so a
    reader never sees half a checkpoint. Returns the path written.
    """
    from ..version import __version__
    from .results import now_iso

    path = Path(path)
    if META_KEY in weights:
        raise ValueError(f"{META_KEY!r} is reserved for the checkpoint's metadata, not a weight name")
    if dtype is None and weights:
        dtype = str(next(iter(weights.values())).dtype)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fwbench": __version__,
            "backend": backend, "task": task, "dtype": dtype,
            "input_shape": [int(v) for v in input_shape], "num_classes": num_classes,
            "config": config or {}, "created_at": now_iso(), **extra}
    arrays = {name: np.ascontiguousarray(value) for name, value in weights.items()}
    arrays[META_KEY] = np.array(json.dumps(meta, default=str))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # same folder: the rename is atomic
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (or any ``.npz`` of canonical arrays).

    Raises:
        ValueError: the file is not a readable ``.npz`` archive (the message says why).
        OSError: the file cannot be opened.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ValueError(f"not an .npz archive ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:  # pickled object arrays, unknown format
        raise ValueError(f"not a plain .npz archive ({exc})") from None
    odd = sorted(name for name, value in arrays.items() if not isinstance(value, np.ndarray))
    if odd:  # NpzFile hands back the raw bytes of a member that is not an .npy array
        raise ValueError(f"its member {odd[0]!r} is not a NumPy array")
    meta: dict[str, Any] = {}
    if META_KEY in arrays:
        try:
            meta = json.loads(str(arrays.pop(META_KEY)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"its {META_KEY} entry is not JSON ({exc})") from None
    return Checkpoint(arrays, meta)


def resolve_init_from(value: str, source: str, key: str = INIT_FROM_KEY) -> Path:
    """The checkpoint file ``model.init_from = value`` names, checked to be a readable checkpoint.

    A relative path is looked up next to the spec file ``source`` first, then in the current
    directory. ``key`` is the spec key named in errors (``inference.weights`` for a served model).

    Raises:
        SpecError: missing or unreadable (one line: the key, the path and the fix).
    """
    given = Path(value).expanduser()
    candidates = [given] if given.is_absolute() else [Path(source).parent / given, Path.cwd() / given]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        where = " or ".join(str(p) for p in candidates)
        raise SpecError(source, key, f"no checkpoint file {value!r} (looked for {where}); "
                        "save one with `bench run --save-weights DIR` and give its .npz path")
    try:
        with zipfile.ZipFile(found) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise SpecError(source, key, f"cannot read checkpoint {str(found)!r} "
                        f"({type(exc).__name__}: {exc}); give an .npz written by `bench run "
                        "--save-weights`") from None
    if not any(n.endswith(".npy") and n != f"{META_KEY}.npy" for n in names):
        raise SpecError(source, key, f"checkpoint {str(found)!r} holds no arrays; give an .npz "
                        "written by `bench run --save-weights`")
    return found.resolve()


def merge_weights(initial: dict[str, np.ndarray], saved: dict[str, np.ndarray]
                  ) -> tuple[dict[str, np.ndarray], list[str], list[dict[str, Any]]]:
    """Take every saved array whose name and shape match ``initial``; keep the rest of ``initial``.

    Args:
        initial: the model's canonical initial weights (name -> array, the target dtype).
        saved: a checkpoint's arrays.
    Returns:
        ``(weights, loaded, skipped)``: the merged weights (in the dtypes of ``initial``), the names
        loaded, and one ``{"name", "reason", ...}`` per array not loaded (a shape mismatch, a name
        the model lacks, or a model array the checkpoint lacks).
    """
    merged, loaded, skipped = {}, [], []
    for name, init in initial.items():
        value = saved.get(name)
        if value is None:
            merged[name] = init
            skipped.append({"name": name, "reason": "not in the checkpoint: canonical init kept"})
        elif tuple(value.shape) != tuple(init.shape):
            merged[name] = init
            skipped.append({"name": name, "reason": "shape mismatch: canonical init kept",
                            "model_shape": list(init.shape), "checkpoint_shape": list(value.shape)})
        else:
            merged[name] = np.asarray(value).astype(init.dtype, copy=True)
            loaded.append(name)
    for name, value in saved.items():
        if name not in initial:
            skipped.append({"name": name, "reason": "the model has no array of this name: ignored",
                            "checkpoint_shape": list(value.shape)})
    return merged, loaded, skipped


def apply_init_from(path: str | Path, initial: dict[str, np.ndarray], source: str = "<spec>"
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Initial weights with a checkpoint merged in, and the facts for the record's ``init_from``.

    Raises:
        SpecError: the checkpoint cannot be read.
    """
    try:
        checkpoint = load_checkpoint(path)
    except (OSError, ValueError) as exc:
        raise SpecError(source, INIT_FROM_KEY, f"cannot read checkpoint {str(path)!r} ({exc}); give an "
                        ".npz written by `bench run --save-weights`") from None
    weights, loaded, skipped = merge_weights(initial, checkpoint.weights)
    meta = checkpoint.meta
    facts = {"path": str(path), "loaded": loaded, "skipped": skipped,
             "source": {k: meta.get(k) for k in ("backend", "task", "dataset", "dtype", "input_shape",
                                                  "num_classes", "fwbench", "created_at", "cell_id")}}
    if not loaded:
        facts["warning"] = (f"no array of {path} matches this model by name and shape: "
                            "it trains from the canonical init")
    return weights, facts
