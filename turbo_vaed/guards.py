"""The shared validation layer: what every command checks before its expensive work.

One place for each promise of the CLI ("one ``error:`` line, exit 2, nothing left, nothing run"):

- **numbers**: :func:`check_number` (finite, in range) for options typer's ``min=`` cannot express;
- **finite tensors**: :func:`check_finite` (latents, outputs) and :func:`check_weights_finite` (a module or
  state dict; names the tensor and the file);
- **strict JSON**: :func:`loads_json` / :func:`read_json` refuse NaN/Infinity, numbers that overflow a float,
  nesting deeper than :data:`MAX_JSON_DEPTH` and files larger than the caller allows; :func:`dumps_json` never
  writes NaN (it names the key that holds one);
- **loading**: :func:`reading` turns whatever a parser raises on a corrupt file into one :class:`UserError`;
- **memory**: :func:`require_decode_memory` estimates a decode/export/bench job (input + output + the largest
  activation, measured on the meta device, times a live factor) and refuses it with the estimate and the fix
  when psutil says the memory is not there;
- **outputs**: :func:`check_output_file` / :func:`check_output_dir` (a folder or file in the way, a folder that
  cannot be written, a file where a parent folder should be) and :func:`clean_stale_temps` (temp files and
  folders of the same output left by a killed run);
- **artifacts**: :func:`check_artifact` (magic bytes; a deep check - ONNX checker, an ExecuTorch load in a
  probe process - when the file is not the one its manifest hashes) and :func:`native_stderr` (native runtimes'
  chatter on fd 2 kept off the terminal).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from turbo_vaed.errors import UserError

GiB = float(2**30)
MiB = float(2**20)

# ---------------------------------------------------------------------------------------------- numbers


def check_number(value: float | int | None, option: str, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, integer: bool = False) -> None:
    """One-line error unless ``value`` (``None`` passes) is finite and within [lo, hi] (``lo_open``: > lo)."""
    if value is None:
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{option} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise UserError(f"{option} must be a finite number, got {value}")
    if integer and v != int(v):
        raise UserError(f"{option} must be a whole number, got {value}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise UserError(f"{option} must be {'>' if lo_open else '>='} {lo:g}, got {value}")
    if hi is not None and v > hi:
        raise UserError(f"{option} must be <= {hi:g}, got {value}")


def check_choice(value: str, option: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise UserError(f"unknown {option} '{value}': choose one of {', '.join(choices)}")
    return value


# ---------------------------------------------------------------------------------------------- finite tensors


def _nonfinite(t) -> tuple[int, int, int]:
    """(NaN count, Inf count, flat index of the first non-finite value or -1)."""
    import torch

    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return 0, 0, -1
    n_nan = int(torch.isnan(t).sum())
    first = int(bad.flatten().nonzero()[0])
    return n_nan, int(bad.sum()) - n_nan, first


def check_finite(t, what: str, fix: str) -> None:
    """One-line error when a floating tensor holds NaN or Inf: ``{what} holds ... : {fix}``."""
    import torch

    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.device.type == "meta":
        return
    n_nan, n_inf, first = _nonfinite(t)
    if first < 0:
        return
    idx = tuple(int(i) for i in _unravel(first, tuple(t.shape)))
    parts = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} Inf" if n_inf else ""]
    raise UserError(f"{what} holds {' and '.join(p for p in parts if p)} value(s) (first at index {list(idx)}): "
                    f"{fix}")


def _unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    out = []
    for s in reversed(shape):
        out.append(flat % s if s else 0)
        flat //= max(s, 1)
    return list(reversed(out))


def check_weights_finite(weights, source: str, fix: str = "re-train or re-export it") -> None:
    """One-line error naming the first tensor of a module / state dict that holds NaN or Inf."""
    import torch

    items = weights.state_dict().items() if isinstance(weights, torch.nn.Module) else dict(weights).items()
    for name, t in items:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.device.type != "meta":
            n_nan, n_inf, first = _nonfinite(t)
            if first >= 0:
                raise UserError(f"{source}: weight tensor '{name}' holds {n_nan + n_inf} non-finite value(s) "
                                f"({n_nan} NaN, {n_inf} Inf) of {t.numel()}: {fix}")


def check_decoder_finite(decoder, fix: str | None = None) -> None:
    """:func:`check_weights_finite` for a :class:`~turbo_vaed.decoders.Decoder` (names its checkpoint)."""
    label = getattr(decoder, "checkpoint", None) or "the decoder"
    source = f"checkpoint {label}" if label not in ("random", "the decoder") else f"the {label} decoder"
    check_weights_finite(decoder.module, source, fix or "its weights are broken (a diverged run?): re-train it or "
                         "pass another --checkpoint")


# ---------------------------------------------------------------------------------------------- strict JSON

MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 20  # beyond int64 (and beyond any count, size or time turbovaed writes)
DEFAULT_JSON_BYTES = 16 * 2**20


class _JsonRefused(ValueError):
    pass


def _refuse_constant(name: str):
    raise _JsonRefused(f"it holds {name}, which is not a JSON number")


def _parse_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise _JsonRefused(f"the number {s[:24]}{'...' if len(s) > 24 else ''} overflows a float")
    return v


def _parse_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _JsonRefused(f"it holds a {len(s.lstrip('-'))}-digit integer ({s[:12]}...), beyond any value it "
                           "may hold")
    return int(s)


def json_depth(doc: object) -> int:
    """Nesting depth of a parsed JSON value (iterative: safe on any depth)."""
    depth, stack = 0, [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            depth = max(depth, d)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return depth


def loads_json(text: str | bytes, source: str, *, max_depth: int = MAX_JSON_DEPTH, fix: str = "") -> Any:
    """Parse JSON strictly; a one-line :class:`UserError` (``{source} is not valid JSON: ...``) otherwise."""
    tail = f": {fix}" if fix else ""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        doc = json.loads(text, parse_constant=_refuse_constant, parse_float=_parse_float, parse_int=_parse_int)
    except _JsonRefused as e:
        raise UserError(f"{source} is not valid JSON: {e}{tail}") from None
    except RecursionError:
        raise UserError(f"{source} is not valid JSON: it is nested more than {max_depth} levels deep{tail}") from None
    except UnicodeDecodeError:
        raise UserError(f"{source} is not JSON: it is not UTF-8 text{tail}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{source} is not JSON ({e.msg} at line {e.lineno} column {e.colno}){tail}") from None
    except ValueError as e:  # int string conversion limits and the like
        raise UserError(f"{source} is not valid JSON: {str(e).splitlines()[0][:120]}{tail}") from None
    if json_depth(doc) > max_depth:
        raise UserError(f"{source} is not valid JSON: it is nested more than {max_depth} levels deep{tail}")
    return doc


def read_json(path: str | Path, what: str, *, max_bytes: int = DEFAULT_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
              fix: str = "", expect: type | None = dict) -> Any:
    """Read a JSON file: found, a plain file, at most ``max_bytes``, strict (:func:`loads_json`), of type ``expect``."""
    p = Path(path)
    tail = f": {fix}" if fix else ""
    if not p.is_file():
        raise UserError(f"{what} not found: {p}{tail}")
    size = p.stat().st_size
    if size > max_bytes:
        raise UserError(f"{what} {p} is {size / MiB:.1f} MiB, more than the {max_bytes / MiB:.0f} MiB such a file "
                        f"can be{tail}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {what} {p}: {e.strerror or type(e).__name__}{tail}") from None
    doc = loads_json(data, f"{what} {p}", max_depth=max_depth, fix=fix)
    if expect is not None and not isinstance(doc, expect):
        raise UserError(f"{what} {p} holds a JSON {type(doc).__name__}, not an object{tail}")
    return doc


def first_nonfinite(data: object, path: str = "") -> str | None:
    """The key path (``a/b/0``) of the first NaN/Inf float in ``data``, or None."""
    stack = [(data, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return p or "(top level)"
        if isinstance(v, dict):
            stack.extend((c, f"{p}/{k}" if p else str(k)) for k, c in reversed(list(v.items())))
        elif isinstance(v, list | tuple):
            stack.extend((c, f"{p}/{i}" if p else str(i)) for i, c in reversed(list(enumerate(v))))
    return None


def dumps_json(data: object, target: str = "JSON") -> str:
    """``json.dumps`` (indented) that refuses NaN/Inf with a one-line error naming the key that holds it."""
    try:
        return json.dumps(data, indent=2, default=str, allow_nan=False) + "\n"
    except ValueError:
        where = first_nonfinite(data)
        raise UserError(f"not writing {target}: the value at {where} is not finite (NaN or Infinity), which JSON "
                        "cannot hold; the numbers behind it are broken (non-finite inputs or weights?)") from None
    except RecursionError:
        raise UserError(f"not writing {target}: the data is nested too deeply") from None


# ---------------------------------------------------------------------------------------------- reading files


@contextlib.contextmanager
def reading(path: str | Path, what: str, fix: str) -> Iterator[None]:
    """Within the block, anything a parser raises on a bad file becomes ``cannot read {what} {path} ...: {fix}``.

    User errors pass through; so do KeyboardInterrupt and SystemExit.
    """
    try:
        yield
    except UserError:
        raise
    except MemoryError:
        raise UserError(f"{what} {path} is too large to read into the memory available: {fix}") from None
    except RecursionError:
        raise UserError(f"cannot read {what} {path}: it is nested too deeply (corrupt?): {fix}") from None
    except Exception as e:  # noqa: BLE001 - the point: no parser error escapes as a traceback
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise UserError(f"cannot read {what} {path}: corrupt or not the expected format ({type(e).__name__}"
                        f"{': ' + msg if msg else ''}): {fix}") from None


def safetensors_header(path: str | Path, what: str, fix: str, max_header: int = 100 * 2**20) -> dict:
    """The JSON header of a safetensors file (tensor names -> dtype/shape/offsets, ``__metadata__``), read
    without loading any tensor; checked against the file size."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"cannot read {what} {p}: too short for safetensors ({size} bytes): {fix}")
        n = int.from_bytes(head, "little")
        if n <= 1 or n > min(max_header, size - 8):
            raise UserError(f"cannot read {what} {p}: corrupt or not safetensors (bad header length): {fix}")
        raw = f.read(n)
    doc = loads_json(raw, f"the safetensors header of {what} {p}", fix=fix)
    if not isinstance(doc, dict):
        raise UserError(f"cannot read {what} {p}: corrupt safetensors header: {fix}")
    data_bytes = size - 8 - n
    for k, v in doc.items():
        if k == "__metadata__":
            continue
        try:
            shape = [int(s) for s in v["shape"]]
            lo, hi = (int(o) for o in v["data_offsets"])
            assert all(s >= 0 for s in shape) and 0 <= lo <= hi <= data_bytes
        except (KeyError, TypeError, ValueError, AssertionError):
            raise UserError(f"cannot read {what} {p}: tensor '{k}' has a corrupt entry in the header (truncated "
                            f"file?): {fix}") from None
    return doc


# ---------------------------------------------------------------------------------------------- memory

DECODE_LIVE = 3  # activations alive at the widest layer: its input, its output, a skip/residual
EXPORT_LIVE = 1  # an export holds one example and traces symbolically; its artifact needs at least this to run


def available_bytes() -> int:
    """Memory the OS says a new allocation can have now (psutil ``available``; ``TURBOVAED_AVAILABLE_MEMORY``
    (bytes) overrides it, e.g. to keep a shared machine's jobs small or to test the refusals)."""
    override = os.environ.get("TURBOVAED_AVAILABLE_MEMORY")
    if override:
        return int(float(override))
    import psutil

    return int(psutil.virtual_memory().available)


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= 0.1 * GiB else f"{n / MiB:.0f} MiB"


def widest_channels(module) -> int:
    """The most channels any conv/linear weight of ``module`` reads or writes (an upper bound per pixel)."""
    w = 1
    for p in module.parameters():
        if p.dim() >= 2:
            w = max(w, int(p.shape[0]), int(p.shape[1]))
    return w


def meta_activations(build: Callable[[], Any], run: Callable[[Any, Any], Any], input_shape: tuple[int, ...]
                     ) -> tuple[int, int] | None:
    """(largest, total) bytes (fp32) of the module outputs when ``run(module, z)`` decodes a ``input_shape``
    tensor, with the module built on the meta device (no memory, no compute); None if that cannot be done."""
    import torch

    try:
        with torch.device("meta"):
            module = build()
        largest = [0, 0]

        def hook(_mod, _inp, out):
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor):
                    b = t.numel() * 4
                    largest[0] = max(largest[0], b)
                    largest[1] += b

        handles = [m.register_forward_hook(hook) for m in module.modules()]
        try:
            with torch.no_grad():
                run(module, torch.empty(*input_shape, device="meta"))
        finally:
            for h in handles:
                h.remove()
        return largest[0], largest[1]
    except UserError:  # the decode itself would refuse this input the same way
        raise
    except Exception:  # noqa: BLE001 - an estimate we cannot make is not an error
        return None


def require_memory(need: int, job: str, fix: str) -> None:
    avail = available_bytes()
    if need > avail:
        raise UserError(f"{job} needs about {_gib(need)} of memory, {_gib(avail)} is available: {fix}")


def require_decode_memory(decoder, latent_shape: tuple[int, ...], *, job: str = "decoding", live: int = DECODE_LIVE,
                          fix: str | None = None) -> int | None:
    """Refuse a decode of ``latent_shape`` (B, C, T, h, w) by ``decoder`` that cannot fit in memory.

    ``decoder`` is a :class:`~turbo_vaed.decoders.Decoder`, or a diffusers teacher VAE. The estimate is
    input + output + ``live`` x the largest activation; the largest activation is bounded first by the widest
    layer at full output size and measured on the meta device only when that bound does not fit.
    Returns the estimate in bytes (None when the cheap bound was enough).
    """
    b, c, t, h, w = (int(s) for s in latent_shape)
    spec = _decode_spec(decoder, t)
    frames, factor, weights, widest, build, run = spec
    out_px = b * frames * (h * factor) * (w * factor)
    lower = 4 * (b * c * t * h * w + 3 * out_px) + weights
    fix = fix or ("use a smaller --res (or crop the latents), fewer latent frames per chunk, or stream it "
                  "(`decode --stream`, `export --stream`)")
    what = (f"{job} {b}x{c}x{t}x{h}x{w} latents ({b * frames} frames of {w * factor}x{h * factor})")
    avail = available_bytes()
    if lower > avail:
        require_memory(lower, what, fix)
    upper = lower + live * 4 * widest * out_px
    if upper <= avail:
        return None
    acts = meta_activations(build, run, (b, c, t, h, w))
    if acts is None:
        return None
    need = lower + live * acts[0]
    require_memory(need, what + f", largest activation {_gib(acts[0])}", fix)
    return need


def _decode_spec(decoder, t: int):
    """(frames out, spatial factor, weight bytes, widest channels, meta builder, meta runner) of a decoder."""
    module = getattr(decoder, "module", None)
    if module is not None and hasattr(decoder, "arch"):  # a turbovaed Decoder
        arch, cfg = decoder.arch, decoder.config
        weights = sum(p.numel() * p.element_size() for p in module.parameters())
        return (decoder.frames_out(t), decoder.spatial_factor, weights, widest_channels(module),
                lambda: arch.build(cfg), arch.reference)
    # a diffusers teacher VAE
    from turbo_vaed.teachers import family_of, teacher_decode

    fam = family_of(decoder)
    mods = [decoder.decoder, *([decoder.post_quant_conv] if getattr(decoder, "post_quant_conv", None) else [])]
    weights = sum(p.numel() * p.element_size() for m in mods for p in m.parameters())
    widest = max(widest_channels(m) for m in mods)
    return (fam.frames_out(t), fam.spatial_factor, weights, widest,
            lambda: type(decoder).from_config(decoder.config), teacher_decode)


def manifest_shapes(manifest: dict, source: str = "the manifest") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The artifact's input ``[T, C, h, w]`` and output ``[F, 3, H, W]`` shapes, checked to be positive integers."""
    try:
        shapes = [tuple(manifest[k][0]["shape"]) for k in ("inputs", "outputs")]
        assert all(len(s) == 4 and all(type(v) is int and 0 < v < 2**31 for v in s) for s in shapes)
    except (AssertionError, KeyError, IndexError, TypeError):
        raise UserError(f"{source}: the input/output shapes are not four positive integers each: re-export "
                        "the artifact") from None
    return shapes[0], shapes[1]


def require_artifact_memory(manifest: dict, job: str, live: int = 2) -> None:
    """Refuse running an artifact whose manifest shapes (input + output, ``live`` copies) cannot fit."""
    (t, c, h, w), (f, k, hh, ww) = manifest_shapes(manifest)
    need = 4 * live * (t * c * h * w + f * k * hh * ww)
    require_memory(need, f"{job} {manifest.get('artifact', 'the artifact')} (latents {[t, c, h, w]} -> frames "
                   f"{[f, k, hh, ww]})", "re-export it at a smaller --res or fewer --latent-frames")


def check_bench_request(opts) -> None:
    """What ``turbovaed bench --device host`` checks before it exports or spawns anything: the ARTIFACT (intact,
    its manifest's shapes affordable), else the --out folder, the --latents file (one video, the family's
    geometry) or the --res/--latent-frames chunk, against the memory available. Phone and Mac drivers run the
    artifact on the device, which checks it there."""
    from turbo_vaed.exporters.manifest import manifest_path, read_manifest

    if opts.device != "host":  # the artifact runs on the device, whose app checks it; nothing runs here
        return
    if opts.artifact is not None:
        art = Path(opts.artifact)
        m = read_manifest(art) if manifest_path(art).is_file() else None
        if m is not None:
            require_artifact_memory(m, "benchmarking", live=3)
            if opts.latents is not None:
                from turbo_vaed.latents_io import check_latent_geometry, check_single, peek_latents

                shape, _meta = peek_latents(opts.latents)
                check_latent_geometry(shape, m["family"])
                check_single(shape, str(opts.latents), "bench decodes one latent video")
        if m is not None:  # without one, the driver refuses the artifact (no manifest) before loading it
            check_artifact(art, m)
        return
    from turbo_vaed.bench.host import bench_family
    from turbo_vaed.families import get_family, resolve_resolution
    from turbo_vaed.latents_io import check_latent_geometry, check_single, peek_latents

    check_output_dir(opts.out_dir, "--out folder")
    family = bench_family(opts)
    fam = get_family(family)
    if opts.latents is not None:
        shape, meta = peek_latents(opts.latents)
        check_latent_geometry(shape, family)
        check_single(shape, str(opts.latents), "bench decodes one latent video")
    else:
        w, h = resolve_resolution(opts.res, fam)
        f = fam.spatial_factor
        shape = (1, fam.latent_channels, int(opts.latent_frames), h // f, w // f)
    _, c, t, hl, wl = shape
    frames = fam.frames_out(t)
    px = frames * hl * wl * fam.spatial_factor**2
    need = 4 * 3 * (c * t * hl * wl + 3 * px)
    require_memory(need, f"benchmarking {fam.name} latents {list(shape)} ({frames} frames of "
                   f"{wl * fam.spatial_factor}x{hl * fam.spatial_factor})",
                   "use a smaller --res or fewer --latent-frames")


def require_encode_memory(vae, video_shape: tuple[int, ...], *, live: int = DECODE_LIVE,
                          fix: str | None = None) -> None:
    """Refuse encoding a (B, 3, F, H, W) video with the teacher VAE that cannot fit in memory."""
    from turbo_vaed.teachers import teacher_encode

    b, c, f, h, w = (int(s) for s in video_shape)
    lower = 4 * b * c * f * h * w * 2
    fix = fix or "use fewer --frames, or downscale the video first"
    what = f"encoding {f} frames of {w}x{h}"
    avail = available_bytes()
    if lower > avail:
        require_memory(lower, what, fix)
    enc = getattr(vae, "encoder", vae)
    if lower + live * 4 * widest_channels(enc) * b * f * h * w <= avail:
        return
    acts = meta_activations(lambda: type(vae).from_config(vae.config), teacher_encode, (b, c, f, h, w))
    if acts is not None:
        require_memory(lower + live * acts[0], what + f", largest activation {_gib(acts[0])}", fix)


# ---------------------------------------------------------------------------------------------- output paths


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists() and not q.is_symlink():
        if q.parent == q:
            break
        q = q.parent
    return q


def _check_writable_folder(folder: Path, output: Path) -> None:
    """``folder`` (or its nearest existing ancestor) is a folder this process can create files in."""
    base = _nearest_existing(folder)
    if base.exists() and not base.is_dir():
        raise UserError(f"cannot write {output}: {base} is a file, not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".turbovaed-write-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {output}: folder {base} is not writable ({e.strerror or type(e).__name__}); "
                        "choose another path or fix its permissions") from None


def check_output_file(path: str | Path, what: str = "output", suffixes: Iterable[str] | None = None) -> Path:
    """Before any work: ``path`` can be written as a file (no folder in the way, a writable parent folder,
    one of ``suffixes``). Stale temp files of the same output are removed."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p} is a folder: pass a file path")
    if suffixes is not None:
        suffixes = tuple(suffixes)
        if p.suffix.lower() not in suffixes:
            raise UserError(f"{what} {p} must end in {' or '.join(suffixes)}")
    if p.exists() and not os.access(p, os.W_OK) and os.geteuid() != 0:
        raise UserError(f"{what} {p} exists and is read-only: remove it or choose another path")
    _check_writable_folder(p.parent, p)
    clean_stale_temps(p)
    return p


def check_output_dir(path: str | Path, what: str = "output folder", *, new: bool = False) -> Path:
    """Before any work: ``path`` is (or can be created as) a writable folder; ``new``: it must not exist."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{what} {p} is a file: pass a folder path (-o DIR)")
    if new and p.exists():
        raise UserError(f"{p} already exists: remove it or choose another -o")
    _check_writable_folder(p, p)
    clean_stale_temps(p)
    return p


# ---------------------------------------------------------------------------------------------- stale temps

STALE_AGE_S = 6 * 3600  # a temp without a process id is stale after this long


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    import psutil

    try:
        return psutil.pid_exists(pid)
    except (OverflowError, ValueError):
        return False


def _temp_patterns(p: Path) -> list[re.Pattern]:
    stem, suffix = re.escape(p.stem), re.escape(p.suffix)
    name = re.escape(p.name)
    return [
        re.compile(rf"^\.{stem}\.(?:tmp|old)(?P<pid>\d+){suffix}$"),  # fileio.atomic_path: .NAME.tmpPID.SUFFIX
        re.compile(rf"^\.{name}\.(?:tmp(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp$"),  # exporters: .NAME.[tmpPID.]XXXX.tmp
        re.compile(rf"^{name}\.tmp(?P<pid>\d+)$"),  # older latent caches: NAME.tmpPID
    ]


def stale_temps(path: str | Path) -> list[Path]:
    """Temp files/folders of output ``path`` that no live process is writing (killed runs)."""
    p = Path(path)
    parent = p.parent
    if not parent.is_dir():
        return []
    pats = _temp_patterns(p)
    found = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    now = time.time()
    for e in entries:
        for pat in pats:
            m = pat.match(e.name)
            if not m:
                continue
            pid = m.group("pid")
            if pid is not None:
                stale = not _pid_alive(int(pid))
            else:
                try:
                    stale = now - e.stat(follow_symlinks=False).st_mtime > STALE_AGE_S
                except OSError:
                    stale = False
            if stale:
                found.append(Path(e.path))
            break
    return found


def clean_stale_temps(path: str | Path) -> list[Path]:
    """Remove what :func:`stale_temps` finds; returns the removed paths."""
    removed = []
    for q in stale_temps(path):
        try:
            if q.is_dir() and not q.is_symlink():
                shutil.rmtree(q)
            else:
                q.unlink()
            removed.append(q)
        except OSError:
            pass
    return removed


# ---------------------------------------------------------------------------------------------- artifacts

PTE_PROBE = (
    "import sys\n"
    "from executorch.runtime import Runtime\n"
    "Runtime.get().load_program(sys.argv[1]).load_method('forward')\n"
)
PROBE_TIMEOUT_S = 300


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith(" ")]
    return lines[-1][:200] if lines else ""


def _magic(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def check_artifact(path: str | Path, manifest: dict | None = None, *, deep: bool | None = None) -> None:
    """One-line error unless ``path`` looks like an intact artifact of its kind, checked before any native
    runtime sees it.

    Always: present, non-empty, the file identifier of its format (``.pte`` flatbuffer ``ETnn``, ``.ort``
    ``ORTM``, ``.mlpackage`` a folder with ``Manifest.json``). ``deep`` (default: when the file is not the one
    its manifest hashes): ``.onnx`` through ``onnx.load`` and the ONNX checker; ``.pte`` loaded by the ExecuTorch
    runtime in a probe process, so that a runtime abort on a corrupt file cannot take the CLI down.
    """
    p = Path(path)
    fix = "re-export it with `turbovaed export`"
    if not p.exists():
        raise UserError(f"artifact not found: {p}; export one with `turbovaed export`")
    if p.suffix == ".mlpackage":
        if not p.is_dir() or not (p / "Manifest.json").is_file():
            raise UserError(f"{p.name} is not a Core ML package (no Manifest.json inside): {fix}")
        return
    if not p.is_file():
        raise UserError(f"{p} is not a file: pass the artifact file")
    size = p.stat().st_size
    head = _magic(p)
    if p.suffix == ".pte" and (len(head) < 16 or head[4:6] != b"ET" or not head[6:8].isdigit()):
        raise UserError(f"{p.name} is not an ExecuTorch program (no ETnn flatbuffer identifier; {size} bytes): {fix}")
    if p.suffix == ".ort" and (len(head) < 8 or head[4:8] != b"ORTM"):
        raise UserError(f"{p.name} is not an ORT-format model (no ORTM identifier; {size} bytes): {fix}")
    if p.suffix == ".onnx" and size < 16:
        raise UserError(f"{p.name} is not an ONNX model ({size} bytes): {fix}")
    if deep is None:
        deep = not _matches_manifest(p, manifest)
    if not deep:
        return
    if p.suffix == ".onnx":
        import onnx

        with reading(p, "ONNX model", fix):
            model = onnx.load(str(p), load_external_data=False)
        try:
            onnx.checker.check_model(model)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{p.name} fails the ONNX checker ({type(e).__name__}: {_last_line(str(e))}): "
                            f"{fix}") from None
    elif p.suffix == ".pte":
        probe_pte(p)


def _matches_manifest(p: Path, manifest: dict | None) -> bool:
    if not manifest or not manifest.get("sha256") or p.suffix == ".ort":
        return False
    from turbo_vaed.fileio import tree_sha256

    try:
        return tree_sha256(p) == manifest["sha256"]
    except OSError:
        return False


_PROBED: dict[tuple, str | None] = {}  # (path, size, mtime) -> the refusal (None: loads fine)


def probe_pte(path: Path) -> None:
    """Load a .pte in a child process; a crash or a refusal there is one line here (remembered per file)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _PROBED:
        _PROBED[key] = _probe_pte(path)
    if _PROBED[key]:
        raise UserError(_PROBED[key])


def _probe_pte(path: Path) -> str | None:
    env = {**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore", "DIFFUSERS_VERBOSITY": "error"}
    try:
        r = subprocess.run([sys.executable, "-c", PTE_PROBE, str(path)], capture_output=True, text=True,
                           timeout=PROBE_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return (f"{path.name}: the ExecuTorch runtime did not load it within {PROBE_TIMEOUT_S} s (corrupt?): "
                "re-export it")
    if r.returncode == 0:
        return None
    code = r.returncode
    how = f"crashed (signal {-code if code < 0 else code - 128})" if code < 0 or code > 128 else "refused it"
    why = _last_line(r.stderr)
    return (f"{path.name} is corrupt: the ExecuTorch runtime {how} when loading it{' (' + why + ')' if why else ''}"
            ": re-export it with `turbovaed export`")


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Send what native code writes to fd 2 (e.g. ExecuTorch's ``[cpuinfo_utils.cpp:...]`` lines) to a temp
    file for the block; the yielded list holds those lines afterwards."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield lines
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            lines.extend(log.read().decode(errors="replace").splitlines())
