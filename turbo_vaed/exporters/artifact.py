"""Exporters: any lowered decoder -> Core ML / ExecuTorch / ONNX artifact + ``<name>.manifest.json``, atomically.

``export_artifact`` lowers the 5-D reference (:meth:`turbo_vaed.decoders.Decoder.lower`), converts it in a temp
folder inside ``out_dir``, writes the manifest there, then renames everything into place (manifest last).
On any failure the temp folder is removed and nothing new is left in ``out_dir``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from turbo_vaed.decoders import Decoder, as_decoder
from turbo_vaed.errors import UserError
from turbo_vaed.exporters.manifest import build_manifest, manifest_path, write_manifest
from turbo_vaed.exporters.phone_report import finish_report, mobile_gflops_per_frame, module_weights_bytes
from turbo_vaed.exporters.presets import (
    check_target,
    load_preset,
    lowering_options,
    resolve_delegate,
    resolve_latent_frames,
    resolve_precision,
)
from turbo_vaed.families import Resolution, get_family, resolve_res
from turbo_vaed.lowering import LoweringOptions
from turbo_vaed.targets import TARGET_NAMES, get_target

__all__ = ["TARGET_NAMES", "ExportResult", "export_artifact", "default_name"]


@dataclass
class ExportResult:
    artifact: Path
    manifest_path: Path
    manifest: dict


def default_name(family: str, target: str, delegate: str | None, preset: str, precision: str, t: int) -> str:
    parts = [family, target] + ([delegate] if delegate and target == "executorch" else []) + [preset, precision]
    return "-".join(parts) + f"-t{t}"


def _commit(files: list[Path], out_dir: Path, tmp: Path) -> None:
    """Move ``files`` from ``tmp`` into ``out_dir`` in order (replacing older ones; folders too)."""
    for i, src in enumerate(files):
        dest = out_dir / src.name
        if dest.is_dir() and not dest.is_symlink():
            os.replace(dest, tmp / f".old-{i}-{src.name}")  # removed with tmp
        os.replace(src, dest)


def stream_memory_estimate(step, in_shape: tuple[int, ...], bytes_per_value: int) -> dict | None:
    """A working-set estimate of one streaming call, from the step's traced graph on the meta device (no memory
    used; :mod:`turbo_vaed.liveness`).

    weights + the state inputs + the latents + the peak of the buffers alive at once when the ops run in the
    program's order, each freed after its last reader (frames and next states included: an app that binds the
    next states over the inputs holds less). An app's budget check, not a measurement: runtimes add arenas,
    workspaces and layout copies (the host's ONNX Runtime fp32 peak is printed by ``turbovaed bench --stream``).
    """
    import copy

    from turbo_vaed.liveness import peak_live_bytes

    meta = copy.deepcopy(step.module).to("meta")
    one = torch.ones(1, 1, 1, 1, device="meta")
    inputs = [torch.zeros(*in_shape, device="meta"), *(one for _ in step.controls),
              *(torch.zeros(sh, device="meta") for _, sh in step.states)]
    try:
        live = peak_live_bytes(meta, inputs)
    except Exception:  # noqa: BLE001 - a step that cannot be traced on meta tensors gets no estimate, not an error
        return None
    b = bytes_per_value
    weights = sum(t.numel() for t in step.module.state_dict().values()) * b  # parameters and buffers
    states = sum(math.prod(sh) for _, sh in step.states) * b
    latents = math.prod(in_shape) * b
    peak = live.peak // 4 * b  # traced in fp32
    return {"bytes": int(weights + states + latents + peak), "weights_bytes": int(weights),
            "states_bytes": int(states), "latents_bytes": int(latents), "peak_live_bytes": int(peak),
            "peak_op": live.peak_op, "bytes_per_value": b,
            "formula": "weights + states + latents + peak of the buffers alive at once (program order, each freed "
                       "after its last reader; frames and next states included)"}


def add_stream_section(manifest: dict, step, io_dtype: str, dec: Decoder) -> None:
    """Name every input/output of a streaming step and say how an app carries the state between calls."""
    flag = {"shape": [1, 1, 1, 1], "dtype": io_dtype}
    manifest["inputs"] += [{"name": n, **flag} for n in step.controls]
    manifest["inputs"] += [{"name": n, "shape": list(s), "dtype": io_dtype} for n, s in step.states]
    if step.valid_output:
        manifest["outputs"] += [{"name": "valid", "shape": [step.frames_per_chunk, 1, 1, 1], "dtype": io_dtype}]
    manifest["outputs"] += [{"name": f"{n}_next", "shape": list(s), "dtype": io_dtype} for n, s in step.states]
    if step.valid_output:
        tail = ("pad the last chunk with copies of its last latent frame, then call flush_chunks more times (the "
                "last chunk again, start advancing by chunk_latent_frames); keep the rows of frames whose valid "
                "is > 0.5, in order")
        first = "nothing to drop: valid says which rows are frames"
    else:
        tail = ("pad the last chunk with copies of its last latent frame; keep the first n * frames_per_chunk / "
                "chunk_latent_frames frames of its output")
        first = f"drop the first {step.first_chunk_skip} frames of the first chunk when trim = 1"
    from turbo_vaed.streaming import CONTROL_DOCS, stream_spec

    loop = stream_spec(step, io_dtype)
    states = loop.pop("states")
    manifest["stream"] = {
        **loop,
        "flags": {n: CONTROL_DOCS[n] for n in step.controls},
        "states": states,
        "tail": tail,
        "first_chunk": first,
        "restart": (f"at latent frame(s) {', '.join(map(str, step.restart_at))} the video restarts: reset the states "
                    "to their init values and count start/remaining within the new segment") if step.restart_at
        else None,
        "coreml_states": "explicit inputs/outputs (iOS 18 ct.StateType not used: every runtime takes the same graph)",
        "memory_estimate": {prec: stream_memory_estimate(step, tuple(manifest["inputs"][0]["shape"]), nbytes)
                            for prec, nbytes in (("fp16", 2), ("fp32", 4))},
        "notes": step.notes,
    }


def export_artifact(decoder: Decoder | torch.nn.Module, target: str, res: str | Resolution, *,
                    latent_frames: int | None = 3,
                    precision: str | None = "fp32", out_dir: Path | str = Path("out/artifacts"),
                    delegate: str | None = None, name: str | None = None, checkpoint: str | Path | None = None,
                    progress: Callable[[str], None] | None = None, stream: bool = False,
                    bands: int = 1, band_stages: int | None = None, tail_frames: int = 0) -> ExportResult:
    """Lower ``decoder`` (any architecture) and export it for ``target`` at ``res`` (preset name or ``WxH``).

    ``latent_frames``/``precision`` ``None`` take the preset's value (``export/<target>.toml``).
    ``stream``: export the architecture's streaming step (state tensors as explicit inputs/outputs; the
    manifest's ``stream`` section says how to carry them) instead of a whole-chunk decoder; ``bands`` > 1
    runs its high-resolution tail in that many bands of rows (less memory, same numbers); ``band_stages``: how
    many of the highest-resolution stages that tail spans (default 1); ``tail_frames`` > 0 runs that tail this
    many frames at a time, states carried from group to group (less memory, nothing recomputed).
    ``checkpoint`` (a path) relabels where the weights came from in the manifest. Bad input raises
    :class:`UserError` before anything is written.
    """
    say = progress or (lambda _msg: None)
    dec = as_decoder(decoder)
    if checkpoint is not None:
        from turbo_vaed.decoders.store import builtin_label
        from turbo_vaed.fileio import file_sha256

        if not Path(checkpoint).exists():
            raise UserError(f"checkpoint not found: {checkpoint}; pass --checkpoint PATH to a decoder checkpoint")
        ck = Path(checkpoint)
        wfile = ck / "weights.safetensors" if ck.is_dir() else ck
        dec = replace(dec, checkpoint=builtin_label(ck) or str(ck),
                      checkpoint_sha256=file_sha256(wfile) if wfile.is_file() else None)
    target = check_target(target)
    preset = load_preset(target)
    fam = get_family(dec.family)
    r = resolve_res(res, fam)
    width, height, preset_name = r.width, r.height, r.preset
    delegate = resolve_delegate(target, delegate, preset)
    precision = resolve_precision(precision, preset, delegate)
    t = resolve_latent_frames(latent_frames, preset, preset_name)
    if t < dec.min_latent_frames:
        raise UserError(f"this {dec.arch.name} decoder needs at least {dec.min_latent_frames} latent frames per "
                        f"chunk, got {t}: raise --latent-frames")
    opts = lowering_options(preset, delegate, precision)
    if bands != 1 or tail_frames:
        if not stream:
            raise UserError("--bands and --tail-frames split the streaming step's high-resolution tail: pass "
                            "--stream too")
        from turbo_vaed.streaming import banded_options

        opts = banded_options(opts, dec, bands, band_stages, tail_frames)
    elif band_stages is not None:
        raise UserError("--band-stages sets how far the bands reach: pass --stream --bands N (or --tail-frames "
                        "N) too")
    label = fam.name if dec.arch.name == "student" else f"{fam.name}-{dec.arch.name}"
    suffix = ("-stream" if stream else "") + (f"-b{bands}" if bands > 1 else "")
    if band_stages is not None and band_stages != LoweringOptions.stream_band_stages:  # only with a split tail
        suffix += f"s{band_stages}" if bands > 1 else f"-s{band_stages}"
    suffix += f"-f{tail_frames}" if tail_frames else ""
    name = name or default_name(label, target, delegate, preset_name, precision, t) + suffix
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"artifact name '{name}' must be letters, digits, '.', '_' or '-' (no folders): fix --name")
    out_dir = Path(out_dir)
    from turbo_vaed.guards import (
        EXPORT_LIVE,
        check_decoder_finite,
        check_output_dir,
        clean_stale_temps,
        require_decode_memory,
    )

    check_output_dir(out_dir)
    check_decoder_finite(dec, "an artifact of NaN weights decodes nothing: re-train the decoder or pass another "
                         "--checkpoint")
    in_shape = dec.input_shape(t, height, width)
    require_decode_memory(dec, (1, in_shape[1], in_shape[0], in_shape[2], in_shape[3]), job="exporting",
                          live=EXPORT_LIVE, fix="use a smaller --res or fewer --latent-frames per chunk (the app "
                          "decodes a video chunk by chunk)")
    clean_stale_temps(out_dir / name)  # temp folders of a killed export of the same artifact

    t0 = time.perf_counter()
    say(f"lowering the {fam.name} {dec.arch.name} decoder to a rank-4 graph ({opts.shuffle}, "
        f"fp16_safe={opts.fp16_safe})")
    mobile = dec.lower(opts)
    out_shape = (dec.frames_out(t), 3, height, width)
    example = torch.randn(*in_shape, generator=torch.Generator().manual_seed(0))
    graph, io, step = mobile, None, None
    if stream:
        from turbo_vaed.targets.base import GraphIO

        step = dec.arch.stream_step(dec.module, opts, t, in_shape[2], in_shape[3])
        graph = step.module
        out_shape = (step.frames_per_chunk, 3, height, width)
        # a distinct tensor per control input: an exporter may merge inputs that are the same tensor object
        example = (example, *(torch.ones(1, 1, 1, 1) for _ in step.controls), *(torch.zeros(s) for _, s in step.states))
        io = GraphIO(("latents", *step.controls, *(n for n, _ in step.states)),
                     ("frames", *(("valid",) if step.valid_output else ()), *(f"{n}_next" for n, _ in step.states)))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp{os.getpid()}.", suffix=".tmp", dir=out_dir))
    try:
        say(f"converting to {target}{f' ({delegate})' if delegate else ''} {precision} "
            f"[{', '.join(map(str, in_shape))}] -> [{', '.join(map(str, out_shape))}]")
        try:
            conv = get_target(target).convert(graph, example, tmp, name, precision, preset, delegate, io)
        except UserError:
            raise
        except Exception as e:  # converter failures: one line, nothing written
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"{target} export failed ({type(e).__name__}: {msg[:300]}); nothing was written") from e
        say("counting FLOPs and writing the manifest")
        gflops = mobile_gflops_per_frame(mobile, in_shape, dec.frames_out(t))
        weights = conv.report.pop("weights_bytes", None) or module_weights_bytes(mobile, precision)
        report = finish_report(conv.report, weights_bytes=weights, gflops_per_frame=gflops)
        extra = {"lowering": asdict(opts), "export_seconds": round(time.perf_counter() - t0, 2),
                 "extra_files": [p.name for p in conv.extra_files], **conv.extra}
        manifest = build_manifest(
            name=name, artifact=conv.artifact, target=target, delegate=delegate, preset=preset_name,
            family=fam.name, width=width, height=height, input_shape=list(in_shape), output_shape=list(out_shape),
            precision=precision, io_dtype=conv.io_dtype, decoder=dec.manifest_section(),
            report=report, extra=extra)
        if step is not None:
            add_stream_section(manifest, step, conv.io_dtype, dec)
        mpath = write_manifest(tmp / manifest_path(conv.artifact).name, manifest)
        _commit([conv.artifact, *conv.extra_files, mpath], out_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    final = out_dir / conv.artifact.name
    return ExportResult(artifact=final, manifest_path=manifest_path(final), manifest=manifest)
