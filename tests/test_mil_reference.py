"""MIL reference evaluator: Core ML ML programs evaluated on Linux against the PyTorch reference.

Parity of exported Core ML artifacts (fp32 within 1e-4, fp16 emulation >= 45 dB PSNR) on random latents,
the reference teacher's latents and real Wan 2.1 latents; deliberately corrupted programs fail parity;
exact MIL semantics against coremltools' own value inference; the ExecuTorch Core ML delegate's embedded
program, extracted from the .pte.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import small_student
from turbo_vaed.errors import UserError
from turbo_vaed.lowering import from_mobile_layout
from turbo_vaed.metrics import max_abs_error, psnr
from turbo_vaed.targets import coreml_mil as mr

WAN_LATENTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "wan21_latents_61f_320x512.pth"
SPEC = Path("Data/com.apple.CoreML/model.mlmodel")
FP32_MAX_ABS = 1e-4
FP16_MIN_PSNR = 45.0
SOURCES = ("random", "teacher", "wan21")


# ------------------------------------------------------------------------------------------------ helpers


def frames(out: np.ndarray) -> torch.Tensor:
    """Evaluator frames ``[F, 3, H, W]`` -> reference layout ``(1, 3, F, H, W)``, float32."""
    return from_mobile_layout(torch.from_numpy(np.asarray(out, dtype=np.float32)))


def run_program(prog: mr.Program, z: torch.Tensor, precision: str, **kw) -> torch.Tensor:
    """Evaluate a single-input single-output decoder program on latents ``(1, C, T, h, w)``."""
    x = z[0].transpose(0, 1).contiguous().numpy()
    out = mr.evaluate(prog, {prog.inputs[0].name: x}, precision, **kw)
    return frames(out[prog.outputs[0]])


def fit(z: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
    """Latents ``(1, C, T', h', w')`` cut to ``(1, C, t, h, w)``, tiling where they are smaller."""
    reps = [math.ceil(n / s) for n, s in zip((t, h, w), z.shape[2:], strict=True)]
    if any(r > 1 for r in reps):
        z = z.repeat(1, 1, *reps)
    return z[:, :, :t, :h, :w].float().contiguous()


def edit_package(src: Path, dst: Path, edit: Callable[[list], None]) -> Path:
    """Copy a .mlpackage and rewrite its program: ``edit(ops)`` changes the main block's op protos in place."""
    from coremltools.proto import Model_pb2

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    spec = Model_pb2.Model()
    spec.ParseFromString((dst / SPEC).read_bytes())
    fn = spec.mlProgram.functions["main"]
    edit(fn.block_specializations[fn.opset].operations)
    (dst / SPEC).write_bytes(spec.SerializeToString())
    return dst


def producers(ops) -> dict[str, object]:
    return {o.outputs[0].name: o for o in ops if len(o.outputs)}


def with_inline_int(ops, op, key: str, value: int) -> None:
    """Bind ``op``'s ``key`` input to an inline int value (same type as the const it replaces)."""
    arg = op.inputs[key].arguments[0]
    val = type(producers(ops)[arg.name].attributes["val"])()
    val.CopyFrom(producers(ops)[arg.name].attributes["val"])
    val.immediateValue.tensor.ints.values[:] = [value]
    arg.value.CopyFrom(val)  # the binding becomes an inline value (the name is cleared)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def default_exports(tmp_path_factory) -> dict[str, tuple[mr.Program, object, dict]]:
    """The default student (`turbovaed export --target coreml --res 256p`), fp32 and fp16, with references."""
    from turbo_vaed.cli import run
    from turbo_vaed.parity import reference_decoder

    out = tmp_path_factory.mktemp("default")
    res = {}
    for prec in ("fp32", "fp16"):
        assert run(["export", "--target", "coreml", "--res", "256p", "--precision", prec, "-o", str(out)]) == 0
        pkg = out / f"wan-coreml-256p-{prec}-t3.mlpackage"
        manifest = json.loads(pkg.with_suffix(".manifest.json").read_text())
        res[prec] = (mr.load_program(pkg), reference_decoder(manifest), manifest)
    return res


@pytest.fixture(scope="module")
def teacher_latents() -> torch.Tensor:
    """The reference teacher's latents of the held-out clip's first 9 frames (as the demo encodes them)."""
    from turbo_vaed.demo import load_heldout
    from turbo_vaed.teachers import load_teacher, teacher_encode

    video, _fps = load_heldout("wan", 9)
    with torch.no_grad():
        return teacher_encode(load_teacher("wan"), video).float()


def latents_from(source: str, request, t: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    if source == "random":
        return torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(0))
    if source == "teacher":
        return fit(request.getfixturevalue("teacher_latents"), t, h, w)
    if not WAN_LATENTS.is_file():
        pytest.skip(f"real Wan 2.1 latents not found at {WAN_LATENTS} (see ../shared/data/README.md)")
    z = torch.load(WAN_LATENTS, map_location="cpu", weights_only=True)  # N T C H W, bf16, normalised
    return fit(z.float().permute(0, 2, 1, 3, 4), t, h, w)


@pytest.fixture(scope="module")
def tiny_fp16(tmp_path_factory):
    """A tiny wan student exported to Core ML fp16 at 64x64 (2 latent frames): corruption tests edit it."""
    from turbo_vaed.exporters import export_artifact

    dec = small_student("wan")
    art = export_artifact(dec, "coreml", "64x64", latent_frames=2, precision="fp16",
                          out_dir=tmp_path_factory.mktemp("tiny16")).artifact
    return art, dec


@pytest.fixture(scope="module")
def transposed_fp32(tmp_path_factory):
    """A tiny wan student lowered with the reshape/transpose spatial shuffle, converted to Core ML fp32."""
    import coremltools as ct

    from turbo_vaed.lowering import lower

    dec = small_student("wan")
    mobile = lower(dec, shuffle="transpose", fp16_safe=False)
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ep = torch.export.export(mobile.eval(), (x,), strict=False).run_decompositions({})
    ml = ct.convert(ep, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                    minimum_deployment_target=ct.target.iOS18, inputs=[ct.TensorType(name="latents", shape=x.shape)])
    path = tmp_path_factory.mktemp("transposed") / "transposed.mlpackage"
    ml.save(str(path))
    return path, dec


# ------------------------------------------------------------------------------- reading the saved program


def test_program_reading_matches_coremltools(default_exports):
    """Op counts equal the exporter's report (coremltools' own spec walk); every blob weight equals what
    coremltools' blob reader returns."""
    from coremltools.libmilstoragepython import _BlobStorageReader

    for prec, (prog, _ref, manifest) in default_exports.items():
        assert dict(mr.op_types(prog)) == manifest["report"]["op_counts"]
        assert set(mr.op_types(prog)) <= set(mr.supported_ops()) and not mr.unsupported_ops(prog)
        reader = _BlobStorageReader(str(prog.path / "Data/com.apple.CoreML/weights/weight.bin"))
        fn = prog.spec.mlProgram.functions["main"]
        n = 0
        for op in fn.block_specializations[fn.opset].operations:
            val = op.attributes["val"] if op.type == "const" else None
            if val is None or val.WhichOneof("value") != "blobFileValue":
                continue
            ours = prog.consts[op.outputs[0].name]
            if ours.dtype == np.float16:
                theirs = reader.read_fp16_data(val.blobFileValue.offset).view(np.float16)
            else:
                theirs = reader.read_float_data(val.blobFileValue.offset)
            np.testing.assert_array_equal(ours.reshape(-1), np.asarray(theirs).reshape(-1))
            n += 1
        assert n > 10, f"{prec}: only {n} blob weights"


# -------------------------------------------------------------------------- parity of the default student


@pytest.mark.parametrize("source", SOURCES)
def test_default_student_parity(default_exports, source, request):
    """fp32 program (fp32 evaluation) within 1e-4 of PyTorch; fp16 program (fp16 emulation) >= 45 dB."""
    z = latents_from(source, request)
    prog32, ref_dec, _ = default_exports["fp32"]
    prog16, _, _ = default_exports["fp16"]
    with torch.no_grad():
        ref = ref_dec(z)
    got32 = run_program(prog32, z, "fp32")
    got16 = run_program(prog16, z, "fp16")
    mae, db = max_abs_error(got32, ref), psnr(got16, ref)
    print(f"{source}: fp32 max abs {mae:.2e}, fp16 emulation PSNR {db:.2f} dB "
          f"(max abs {max_abs_error(got16, ref):.2e})")
    assert got32.shape == ref.shape == got16.shape
    assert mae <= FP32_MAX_ABS
    assert db >= FP16_MIN_PSNR


@pytest.mark.parametrize("family", ["wan", "hunyuan", "cogvideox", "ltx"])
def test_tiny_students_of_every_family(family, tmp_path):
    """Every family's student programs use only supported ops and match their reference (both precisions)."""
    from turbo_vaed.exporters import export_artifact

    dec = small_student(family)
    res = "64x64" if family == "ltx" else "32x32"
    c = 128 if family == "ltx" else 16
    h = 2 if family == "ltx" else 4
    z = torch.randn(1, c, 2, h, h, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = dec(z)
    for prec in ("fp32", "fp16"):
        prog = mr.load_program(export_artifact(dec, "coreml", res, latent_frames=2, precision=prec,
                                               out_dir=tmp_path).artifact)
        assert not mr.unsupported_ops(prog), mr.op_types(prog)
        got = run_program(prog, z, prec)
        if prec == "fp32":
            assert max_abs_error(got, ref) <= FP32_MAX_ABS
        else:
            assert psnr(got, ref) >= FP16_MIN_PSNR


# ----------------------------------------------------------------------------- corrupted programs are caught


def test_wrong_pixel_shuffle_order_fails_parity(tiny_fp16, tmp_path):
    """pixel_shuffle (CRD order, PyTorch) replaced by depth_to_space (DCR order): same shapes, wrong pixels."""
    art, dec = tiny_fp16
    z = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = dec(z)
    assert psnr(run_program(mr.load_program(art), z, "fp16"), ref) >= FP16_MIN_PSNR

    def edit(ops):
        op = next(o for o in ops if o.type == "pixel_shuffle")
        op.type = "depth_to_space"
        op.inputs["block_size"].CopyFrom(op.inputs["upscale_factor"])
        del op.inputs["upscale_factor"]

    bad = mr.load_program(edit_package(art, tmp_path / "d2s.mlpackage", edit))
    assert mr.op_types(bad)["depth_to_space"] == 1
    for prec in ("fp32", "fp16"):
        got = run_program(bad, z, prec)
        assert psnr(got, ref) < FP16_MIN_PSNR and max_abs_error(got, ref) > 0.05


def test_swapped_pixel_shuffle_factor_fails_parity(tiny_fp16, tmp_path):
    """An upscale factor of 1 instead of 2: the op no longer makes the shape the program declares."""
    art, _dec = tiny_fp16
    names = []

    def edit(ops):
        op = next(o for o in ops if o.type == "pixel_shuffle")
        names.append(op.attributes["name"].immediateValue.tensor.strings.values[0])
        with_inline_int(ops, op, "upscale_factor", 1)

    bad = mr.load_program(edit_package(art, tmp_path / "factor.mlpackage", edit))
    z = torch.randn(1, 16, 2, 8, 8)
    with pytest.raises(UserError, match=rf"op '{names[0]}' \(pixel_shuffle\).*declares"):
        run_program(bad, z, "fp16")
    with pytest.raises(UserError, match="failed"):  # unchecked, the next conv gets 4x the channels it takes
        run_program(bad, z, "fp32", check_shapes=False)


def test_flipped_transpose_permutation_fails_parity(transposed_fp32, tmp_path):
    """perm [0, 2, 3, 1] -> [0, 3, 2, 1] in the reshape/transpose shuffle (square blocks: shapes still fit)."""
    path, dec = transposed_fp32
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = dec(z)
    good = mr.load_program(path)
    assert mr.op_types(good)["transpose"] >= 2
    assert max_abs_error(run_program(good, z, "fp32"), ref) <= FP32_MAX_ABS

    def edit(ops):
        made = producers(ops)
        for op in ops:
            if op.type == "transpose":
                perm = made[op.inputs["perm"].arguments[0].name].attributes["val"].immediateValue.tensor.ints
                if list(perm.values) == [0, 2, 3, 1]:
                    perm.values[:] = [0, 3, 2, 1]
                    return
        raise AssertionError("no transpose with perm [0, 2, 3, 1]")

    bad = mr.load_program(edit_package(path, tmp_path / "perm.mlpackage", edit))
    got = run_program(bad, z, "fp32")
    assert got.shape == ref.shape
    assert max_abs_error(got, ref) > 0.05 and psnr(got, ref) < FP16_MIN_PSNR


def test_dropped_fp16_safe_rescale_fails_fp16_parity(tiny_fp16, tmp_path):
    """RMSNorm without its 1/d rescale (``one / d`` -> ``d / d``): exact in fp32, but x*x overflows fp16.

    Latents scaled by 8192 give activations in the thousands: the intact fp16 program keeps >= 45 dB, the
    corrupted one collapses; its fp32 evaluation still matches (the graph is right in exact arithmetic).
    """
    art, dec = tiny_fp16

    def edit(ops):
        made = producers(ops)
        n = 0
        for op in ops:
            if op.type == "real_div" and made[op.inputs["y"].arguments[0].name].type == "maximum":
                op.inputs["x"].arguments[0].name = op.inputs["y"].arguments[0].name
                n += 1
        assert n > 0

    bad = mr.load_program(edit_package(art, tmp_path / "norescale.mlpackage", edit))
    good = mr.load_program(art)
    for scale, bad_passes in ((1.0, True), (8192.0, False)):
        z = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * scale
        with torch.no_grad():
            ref = dec(z)
        assert psnr(run_program(good, z, "fp16"), ref) >= FP16_MIN_PSNR
        assert max_abs_error(run_program(bad, z, "fp32"), ref) <= 1e-2  # fp16 weights, exact arithmetic
        assert (psnr(run_program(bad, z, "fp16"), ref) >= FP16_MIN_PSNR) == bad_passes


def test_unknown_op_is_refused_by_name(tiny_fp16, tmp_path):
    art, _dec = tiny_fp16

    def edit(ops):
        next(o for o in ops if o.type == "silu").type = "swish_v9"

    bad = mr.load_program(edit_package(art, tmp_path / "unknown.mlpackage", edit))
    assert mr.op_types(bad)["swish_v9"] == 1
    with pytest.raises(UserError, match=r"'swish_v9' x1.*nothing was evaluated"):
        run_program(bad, torch.randn(1, 16, 2, 8, 8), "fp32")


def test_bad_inputs_are_user_errors(tiny_fp16, tmp_path):
    art, _dec = tiny_fp16
    prog = mr.load_program(art)
    with pytest.raises(UserError, match="takes inputs"):
        mr.evaluate(prog, {"z": np.zeros((2, 16, 8, 8), np.float32)})
    with pytest.raises(UserError, match="shape"):
        mr.evaluate(prog, {"latents": np.zeros((2, 16, 8, 9), np.float32)})
    with pytest.raises(UserError, match="precision"):
        mr.evaluate(prog, {"latents": np.zeros((2, 16, 8, 8), np.float32)}, "int8")
    with pytest.raises(UserError, match="not found"):
        mr.load_program(tmp_path / "missing.mlpackage")
    (tmp_path / "empty.mlpackage").mkdir()
    with pytest.raises(UserError, match="no model spec"):
        mr.load_program(tmp_path / "empty.mlpackage")


# ------------------------------------------------------------------------------------------ MIL semantics

OPSET = None  # coremltools target, set lazily (importing coremltools is slow)


def _mb():
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    return ct, mb


def _pos(mb, x):
    return mb.add(x=mb.abs(x=x), y=np.float32(0.25))


def _r(mb, x, shape):
    return mb.reshape(x=x, shape=shape)


W = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
A = np.random.default_rng(1).standard_normal((4,)).astype(np.float32)

# name -> build(mb, x) on x of shape (2, 3, 4); each result is compared with coremltools' value inference
CASES: dict[str, Callable] = {
    "slice_neg_stride": lambda mb, x: mb.slice_by_index(x=x, begin=[1, 2, 0], end=[0, 0, 3], stride=[-1, -2, 1],
                                                        end_mask=[True, True, False]),
    "slice_masks_squeeze": lambda mb, x: mb.slice_by_index(x=x, begin=[0, 1, 3], end=[2, 2, 0], begin_mask=[True, False,
                                                           False], end_mask=[False, False, True],
                                                           squeeze_mask=[False, True, False]),
    "slice_negative_index": lambda mb, x: mb.slice_by_index(x=x, begin=[-1, -3, 1], end=[2, -1, -1]),
    "slice_stride_begin_mask": lambda mb, x: mb.slice_by_index(x=x, begin=[5, 0, 3], end=[2, 3, 0], stride=[1, 2, -1],
                                                               begin_mask=[True, False, True]),
    "slice_by_size": lambda mb, x: mb.slice_by_size(x=x, begin=[0, 1, 1], size=[-1, 2, 2]),
    "reshape_zero_minus1": lambda mb, x: mb.reshape(x=x, shape=[0, -1]),
    "reshape_zero_expand": lambda mb, x: mb.reshape(x=x, shape=[1, 0, -1, 0]),
    "transpose": lambda mb, x: mb.transpose(x=x, perm=[2, 0, 1]),
    "squeeze_axes": lambda mb, x: mb.squeeze(x=_r(mb, x, [2, 1, 12, 1]), axes=[-1, 1]),
    "squeeze_all": lambda mb, x: mb.squeeze(x=_r(mb, x, [1, 24, 1])),
    "expand_dims": lambda mb, x: mb.expand_dims(x=x, axes=[0, -1]),
    "concat": lambda mb, x: mb.concat(values=[x, mb.mul(x=x, y=np.float32(2))], axis=-1),
    "concat_interleave": lambda mb, x: mb.concat(values=[x, mb.mul(x=x, y=np.float32(2))], axis=1, interleave=True),
    "split_num": lambda mb, x: mb.split(x=x, num_splits=2, axis=-1)[1],
    "split_sizes": lambda mb, x: mb.split(x=x, split_sizes=[1, 2], axis=1)[1],
    "stack": lambda mb, x: mb.stack(values=[x, x], axis=1),
    "tile": lambda mb, x: mb.tile(x=x, reps=[1, 2, 3]),
    "reverse": lambda mb, x: mb.reverse(x=x, axes=[0, 2]),
    "pad_constant": lambda mb, x: mb.pad(x=x, pad=[1, 2, 0, 1], mode="constant", constant_val=np.float32(0.5)),
    "pad_reflect": lambda mb, x: mb.pad(x=x, pad=[1, 2, 2, 1], mode="reflect"),
    "pad_replicate": lambda mb, x: mb.pad(x=x, pad=[0, 0, 1, 2, 3, 0], mode="replicate"),
    "gather": lambda mb, x: mb.gather(x=x, indices=np.array([[2, 0], [1, 1]], np.int32), axis=2),
    "gather_along_axis": lambda mb, x: mb.gather_along_axis(x=x, indices=np.array([[[0], [2], [1]]] * 2, np.int32),
                                                            axis=2),
    "flatten2d": lambda mb, x: mb.flatten2d(x=x, axis=2),
    "reduce_mean_axes": lambda mb, x: mb.reduce_mean(x=x, axes=[1], keep_dims=True),
    "reduce_sum_all": lambda mb, x: mb.reduce_sum(x=x),
    "reduce_max": lambda mb, x: mb.reduce_max(x=x, axes=[-1, 0]),
    "reduce_min": lambda mb, x: mb.reduce_min(x=x, axes=[2], keep_dims=True),
    "reduce_prod": lambda mb, x: mb.reduce_prod(x=x, axes=[1, 2]),
    "reduce_l1_norm": lambda mb, x: mb.reduce_l1_norm(x=x, axes=[2]),
    "reduce_l2_norm": lambda mb, x: mb.reduce_l2_norm(x=x, axes=[1]),
    "reduce_sum_square": lambda mb, x: mb.reduce_sum_square(x=x, axes=[0, 1], keep_dims=True),
    "reduce_log_sum": lambda mb, x: mb.reduce_log_sum(x=_pos(mb, x), axes=[2]),
    "reduce_log_sum_exp": lambda mb, x: mb.reduce_log_sum_exp(x=x, axes=[1]),
    "reduce_argmax": lambda mb, x: mb.reduce_argmax(x=x, axis=1, keep_dims=True),
    "reduce_argmin": lambda mb, x: mb.reduce_argmin(x=x, axis=-1),
    "add_broadcast": lambda mb, x: mb.add(x=x, y=A),
    "sub": lambda mb, x: mb.sub(x=A, y=x),
    "mul": lambda mb, x: mb.mul(x=x, y=x),
    "real_div": lambda mb, x: mb.real_div(x=x, y=_pos(mb, x)),
    "floor_div": lambda mb, x: mb.floor_div(x=mb.mul(x=x, y=np.float32(5)), y=np.float32(2)),
    "mod": lambda mb, x: mb.mod(x=mb.mul(x=x, y=np.float32(5)), y=np.float32(2)),
    "pow": lambda mb, x: mb.pow(x=_pos(mb, x), y=np.float32(1.7)),
    "maximum": lambda mb, x: mb.maximum(x=x, y=np.float32(0.1)),
    "minimum": lambda mb, x: mb.minimum(x=x, y=A),
    "greater_select": lambda mb, x: mb.select(cond=mb.greater(x=x, y=A), a=x, b=mb.mul(x=x, y=np.float32(-3))),
    "equal_cast": lambda mb, x: mb.cast(x=mb.equal(x=mb.floor(x=x), y=np.float32(0)), dtype="int32"),
    "logical": lambda mb, x: mb.cast(x=mb.logical_xor(x=mb.less(x=x, y=np.float32(0)),
                                                      y=mb.greater_equal(x=x, y=np.float32(-0.5))), dtype="fp32"),
    "cast_int32": lambda mb, x: mb.cast(x=mb.mul(x=x, y=np.float32(3)), dtype="int32"),
    "abs": lambda mb, x: mb.abs(x=x),
    "sqrt": lambda mb, x: mb.sqrt(x=_pos(mb, x)),
    "rsqrt": lambda mb, x: mb.rsqrt(x=_pos(mb, x), epsilon=np.float32(0.01)),
    "inverse": lambda mb, x: mb.inverse(x=_pos(mb, x), epsilon=np.float32(0.01)),
    "log": lambda mb, x: mb.log(x=_pos(mb, x)),
    "exp": lambda mb, x: mb.exp(x=x),
    "exp2": lambda mb, x: mb.exp2(x=x),
    "tanh": lambda mb, x: mb.tanh(x=x),
    "erf": lambda mb, x: mb.erf(x=x),
    "sin_cos": lambda mb, x: mb.add(x=mb.sin(x=x), y=mb.cos(x=x)),
    "sign_floor_ceil_round": lambda mb, x: mb.add(x=mb.add(x=mb.sign(x=x), y=mb.floor(x=mb.mul(x=x, y=np.float32(3)))),
                                                  y=mb.add(x=mb.ceil(x=x), y=mb.round(x=mb.mul(x=x, y=np.float32(2))))),
    "square": lambda mb, x: mb.square(x=x),
    "clip": lambda mb, x: mb.clip(x=x, alpha=np.float32(-0.3), beta=np.float32(0.6)),
    "threshold": lambda mb, x: mb.threshold(x=x, alpha=np.float32(0.2)),
    "relu": lambda mb, x: mb.relu(x=x),
    "relu6": lambda mb, x: mb.relu6(x=mb.mul(x=x, y=np.float32(5))),
    "sigmoid": lambda mb, x: mb.sigmoid(x=x),
    "silu": lambda mb, x: mb.silu(x=x),
    "softplus": lambda mb, x: mb.softplus(x=x),
    "softsign": lambda mb, x: mb.softsign(x=x),
    "elu": lambda mb, x: mb.elu(x=x, alpha=np.float32(0.7)),
    "leaky_relu": lambda mb, x: mb.leaky_relu(x=x, alpha=np.float32(0.2)),
    "clamped_relu": lambda mb, x: mb.clamped_relu(x=x, alpha=np.float32(0.3), beta=np.float32(0.8)),
    "thresholded_relu": lambda mb, x: mb.thresholded_relu(x=x, alpha=np.float32(0.4)),
    "linear_activation": lambda mb, x: mb.linear_activation(x=x, alpha=np.float32(2.0), beta=np.float32(-1.0)),
    "scaled_tanh": lambda mb, x: mb.scaled_tanh(x=x, alpha=np.float32(1.5), beta=np.float32(0.5)),
    "sigmoid_hard": lambda mb, x: mb.sigmoid_hard(x=x, alpha=np.float32(0.3), beta=np.float32(0.4)),
    "prelu": lambda mb, x: mb.prelu(x=_r(mb, x, [1, 2, 3, 4]), alpha=np.array([0.1, -0.5], np.float32)),
    "softplus_parametric": lambda mb, x: mb.softplus_parametric(x=_r(mb, x, [1, 2, 3, 4]),
                                                                alpha=np.array([0.5, 2.0], np.float32),
                                                                beta=np.array([1.5, -1.0], np.float32)),
    "gelu_exact": lambda mb, x: mb.gelu(x=x, mode="EXACT"),
    "gelu_tanh": lambda mb, x: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
    "gelu_sigmoid": lambda mb, x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
    "softmax": lambda mb, x: mb.softmax(x=x, axis=1),
    "layer_norm": lambda mb, x: mb.layer_norm(x=x, axes=[-1], gamma=A, beta=A[::-1].copy(), epsilon=np.float32(1e-3)),
    "layer_norm_2axes": lambda mb, x: mb.layer_norm(x=x, axes=[1, 2], epsilon=np.float32(1e-5)),
    "matmul": lambda mb, x: mb.matmul(x=x, y=W, transpose_y=True),
    "matmul_tx": lambda mb, x: mb.matmul(x=x, y=x, transpose_x=True),
    "linear": lambda mb, x: mb.linear(x=x, weight=W, bias=np.array([0.1, 0.2, 0.3], np.float32)),
    "trig": lambda mb, x: mb.add(x=mb.add(x=mb.tan(x=mb.mul(x=x, y=np.float32(0.3))), y=mb.atan(x=x)),
                                 y=mb.add(x=mb.asin(x=mb.mul(x=x, y=np.float32(0.2))),
                                          y=mb.acos(x=mb.mul(x=x, y=np.float32(0.2))))),
    "hyperbolic": lambda mb, x: mb.add(x=mb.add(x=mb.sinh(x=x), y=mb.cosh(x=x)),
                                       y=mb.atanh(x=mb.mul(x=x, y=np.float32(0.2)))),
    "logical_and_or": lambda mb, x: mb.cast(x=mb.logical_or(x=mb.logical_and(x=mb.less_equal(x=x, y=A),
                                                                             y=mb.not_equal(x=x, y=np.float32(0))),
                                                            y=mb.logical_not(x=mb.less(x=x, y=np.float32(1)))),
                                            dtype="int32"),
    "shape": lambda mb, x: mb.shape(x=x),
    "fill_like": lambda mb, x: mb.fill_like(ref_tensor=x, value=np.float32(0.5)),
    "fill": lambda mb, x: mb.add(x=x, y=mb.fill(shape=np.array([3, 4], np.int32), value=np.float32(1.5))),
    "identity": lambda mb, x: mb.identity(x=x),
    "range_1d": lambda mb, x: mb.add(x=x, y=mb.range_1d(start=np.float32(0.5), end=np.float32(4.5),
                                                        step=np.float32(1.0))),
}


# expectations from the op's documented formula where coremltools does not fold it (silu) or folds it wrongly
# (concat's value inference ignores ``interleave``; its docs: output[0::2] = in1, output[1::2] = in2)
NO_VALUE_INFERENCE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "silu": lambda x: x / (1 + np.exp(-x)),
    "concat_interleave": lambda x: np.stack([x, 2 * x], axis=2).reshape(2, 6, 4),
}


@pytest.fixture(scope="module")
def semantics(tmp_path_factory) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One saved program holding every case (evaluated here) and coremltools' value inference of each."""
    ct, mb = _mb()
    from coremltools.converters.mil.mil import types

    x = np.random.default_rng(7).standard_normal((2, 3, 4)).astype(np.float32)
    want: dict[str, np.ndarray] = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,), dtype=types.fp32)], opset_version=ct.target.iOS18)
    def folded(d):
        for name, build in CASES.items():
            v = build(mb, mb.const(val=x.copy()))  # some value inferences write into their input (in place)
            if v.val is None or name in NO_VALUE_INFERENCE:
                assert name in NO_VALUE_INFERENCE, f"{name}: coremltools has no value inference for it"
                want[name] = NO_VALUE_INFERENCE[name](x)
            else:
                want[name] = np.array(v.val, copy=True)
        return mb.identity(x=d)

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape, dtype=types.fp32)], opset_version=ct.target.iOS18)
    def prog(x_in):
        outs = []
        for name, build in CASES.items():
            v = build(mb, x_in)
            outs.append(mb.identity(x=v, name=name) if v.dtype != types.bool else mb.cast(x=v, dtype="int32",
                                                                                          name=name))
        return tuple(outs)

    ml = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                    pass_pipeline=ct.PassPipeline.EMPTY, minimum_deployment_target=ct.target.iOS18)
    path = tmp_path_factory.mktemp("semantics") / "cases.mlpackage"
    ml.save(str(path))
    program = mr.load_program(path)
    got = mr.evaluate(program, {program.inputs[0].name: x})
    return got, want


@pytest.mark.parametrize("case", list(CASES))
def test_mil_semantics_match_coremltools(semantics, case):
    got, want = semantics
    assert case in got, f"{case}: not an output ({sorted(got)[:5]}...)"
    g, w = got[case], want[case]
    assert g.shape == w.shape, f"{case}: shape {g.shape}, coremltools {w.shape}"
    np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=2e-5, atol=2e-6, err_msg=case)


def _save(build, shape, path: Path, fp16: bool = False) -> mr.Program:
    ct, mb = _mb()
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=shape, dtype=types.fp32)], opset_version=ct.target.iOS18)
    def prog(x):
        return build(mb, x)

    ml = ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY,
                    compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS18)
    ml.save(str(path))
    return mr.load_program(path)


def test_conv_padding_types_strides_dilations_groups(tmp_path):
    """MIL conv: valid / custom (asymmetric) / same (extra at the end) / same_lower (extra at the start)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 2, 2, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    tx, tw, tb = map(torch.from_numpy, (x, w, b))
    cases = {  # name: (conv kwargs, expected)
        "valid": ({"pad_type": "valid", "strides": [2, 1]}, F.conv2d(tx, tw, tb, stride=(2, 1), groups=2)),
        "custom": ({"pad_type": "custom", "pad": [1, 0, 2, 1], "dilations": [2, 1]},
                   F.conv2d(F.pad(tx, [2, 1, 1, 0]), tw, tb, dilation=(2, 1), groups=2)),
        # k=2, s=1: total 1 -> (0, 1); k=3 dil 2, s=2 on 6: out 3, total (3-1)*2+5-6 = 3 -> (1, 2)
        "same": ({"pad_type": "same", "strides": [1, 2], "dilations": [1, 2]},
                 F.conv2d(F.pad(tx, [1, 2, 0, 1]), tw, tb, stride=(1, 2), dilation=(1, 2), groups=2)),
        "same_lower": ({"pad_type": "same_lower", "strides": [1, 2], "dilations": [1, 2]},
                       F.conv2d(F.pad(tx, [2, 1, 1, 0]), tw, tb, stride=(1, 2), dilation=(1, 2), groups=2)),
    }
    for name, (kw, expected) in cases.items():
        prog = _save(lambda mb, xx, kw=kw: mb.conv(x=xx, weight=w, bias=b, groups=2, **kw), x.shape,
                     tmp_path / f"{name}.mlpackage")
        got = mr.evaluate(prog, {prog.inputs[0].name: x})[prog.outputs[0]]
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_depth_to_space_is_dcr_and_pixel_shuffle_is_crd(tmp_path):
    """depth_to_space: DCR (TensorFlow/ONNX default) order; pixel_shuffle: CRD (PyTorch); space_to_depth inverts."""
    x = np.arange(2 * 8 * 2 * 3, dtype=np.float32).reshape(2, 8, 2, 3)
    b, c, h, w = x.shape
    dcr = x.reshape(b, 2, 2, c // 4, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(b, c // 4, h * 2, w * 2)
    prog = _save(lambda mb, xx: (mb.depth_to_space(x=xx, block_size=2), mb.pixel_shuffle(x=xx, upscale_factor=2),
                                 mb.space_to_depth(x=mb.depth_to_space(x=xx, block_size=2), block_size=2),
                                 mb.pixel_unshuffle(x=mb.pixel_shuffle(x=xx, upscale_factor=2),
                                                    downscale_factor=np.uint32(2))),
                 x.shape, tmp_path / "d2s.mlpackage")
    d2s, ps, roundtrip, ps_roundtrip = (mr.evaluate(prog, {prog.inputs[0].name: x})[n] for n in prog.outputs)
    np.testing.assert_array_equal(d2s, dcr)
    np.testing.assert_array_equal(ps, F.pixel_shuffle(torch.from_numpy(x), 2).numpy())
    np.testing.assert_array_equal(roundtrip, x)
    np.testing.assert_array_equal(ps_roundtrip, x)


def test_torch_converted_zoo_matches_torch(tmp_path):
    """Ops the coremltools PyTorch frontend emits (conv_transpose, norms, pools, resizing, linear...) vs torch."""
    import coremltools as ct
    from torch import nn

    class Zoo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
            self.c3 = nn.Conv2d(8, 6, 4, padding="same")
            self.ct = nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1)
            self.gn, self.bn, self.inorm = nn.GroupNorm(2, 4), nn.BatchNorm2d(4), nn.InstanceNorm2d(4, affine=True)
            self.ln, self.lin = nn.LayerNorm(4), nn.Linear(4, 5)

        def forward(self, x):
            y = self.c2(F.gelu(self.c1(x)))
            y = torch.tanh(y) + F.relu(y) - F.leaky_relu(y, 0.1)
            y = F.elu(self.c3(y) / (1 + y[:, :6].abs()))
            y = self.ct(y)
            y = self.bn(y) + self.gn(y) + self.inorm(y)
            pooled = F.interpolate(F.max_pool2d(y, 2, 2), scale_factor=2.0)
            y = F.avg_pool2d(y, 3, 1, 1, count_include_pad=False) + pooled
            y = y + F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)[..., 1::2, ::2]
            y = self.ln(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            y = torch.softmax(y, 1) * y.mean(dim=(2, 3), keepdim=True) + y.amax(1, keepdim=True) + y.sum(-1, True) ** 2
            y = y.flip(-1) + torch.sqrt(y.abs() + 1) - torch.exp(-y.abs()) + torch.sigmoid(y) * y.clamp(-0.5, 0.5)
            z = self.lin(y.permute(0, 2, 3, 1))
            z = torch.cat([z, z[..., :2]], -1).reshape(2, -1, 7).transpose(1, 2)
            return z, F.pixel_unshuffle(y, 2), F.pixel_shuffle(torch.cat([y, y], 1), 2), y[:, 1:].squeeze(0)

    torch.manual_seed(0)
    m = Zoo().eval()
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        ref = m(x)
        ep = torch.export.export(m, (x,), strict=False).run_decompositions({})
    ml = ct.convert(ep, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                    minimum_deployment_target=ct.target.iOS18, inputs=[ct.TensorType(name="x", shape=x.shape)])
    ml.save(str(tmp_path / "zoo.mlpackage"))
    prog = mr.load_program(tmp_path / "zoo.mlpackage")
    types_ = mr.op_types(prog)
    for t in ("conv_transpose", "batch_norm", "instance_norm", "layer_norm", "avg_pool", "max_pool",
              "upsample_nearest_neighbor", "upsample_bilinear", "linear", "softmax", "pixel_unshuffle"):
        assert types_[t] >= 1, f"the zoo no longer converts to {t}: {types_}"
    out = mr.evaluate(prog, {"x": x.numpy()})
    for name, r in zip(prog.outputs, ref, strict=True):
        r = r.numpy()
        assert out[name].shape == r.shape
        assert np.abs(out[name] - r).max() <= 1e-5 * max(1.0, np.abs(r).max()), name


def test_fp16_emulation_rounds_once_per_op_and_honours_casts(tmp_path):
    """fp16 mode: each op's result rounded to half (overflow -> inf); fp32 mode: exact; int casts truncate."""
    prog = _save(lambda mb, x: (mb.mul(x=x, y=x), mb.add(x=x, y=np.float32(2.0**-12)),
                                mb.cast(x=mb.mul(x=x, y=np.float32(1.7)), dtype="int32"),
                                mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32")),
                 (4,), tmp_path / "fp16.mlpackage")
    x = np.array([300.0, 1.0, -1.3, 1.0 + 2.0**-10], np.float32)
    sq, add, as_int, roundtrip = (mr.evaluate(prog, {prog.inputs[0].name: x}, "fp16")[n] for n in prog.outputs)
    assert math.isinf(sq[0]) and sq[1] == 1.0  # 90000 > 65504
    assert add[1] == 1.0 and add[3] == np.float32(1.0 + 2.0**-10)  # + 2^-12 is a quarter of fp16's step at 1
    assert as_int.dtype == np.int32 and as_int.tolist() == [510, 1, -2, 1]
    assert roundtrip[3] == np.float32(1.0 + 2.0**-10) and roundtrip[2] == np.float32(np.float16(-1.3))
    sq32, add32, _, rt32 = (mr.evaluate(prog, {prog.inputs[0].name: x}, "fp32")[n] for n in prog.outputs)
    assert sq32[0] == 90000.0 and add32[1] == np.float32(1.0 + 2.0**-12)
    np.testing.assert_array_equal(rt32, x)


# ------------------------------------------------------------------------------- ExecuTorch Core ML delegate


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_executorch_coreml_delegate_program_is_extracted_and_evaluated(precision, tmp_path):
    """The Core ML delegate blob of a .pte is the .mlpackage folder (flattened by executorchcoreml): unpack it
    on Linux, check it is the whole graph, evaluate it like any ML program."""
    from turbo_vaed.exporters import export_artifact

    dec = small_student("wan")
    res = export_artifact(dec, "executorch", "64x64", latent_frames=2, precision=precision, delegate="coreml",
                          out_dir=tmp_path)
    assert res.manifest["report"]["partitions"] == 1 and not res.manifest["report"]["non_delegated_ops"]
    pkg = mr.extract_coreml_from_pte(res.artifact, tmp_path / "extracted")
    assert pkg.name == "model.mlpackage" and (pkg / SPEC).is_file()
    ins, outs = mr.delegate_io_names(pkg)
    prog = mr.load_program(pkg)
    assert [s.name for s in prog.inputs] == ins and prog.outputs == outs
    assert not mr.unsupported_ops(prog), mr.op_types(prog)
    z = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = dec(z)
    got = run_program(prog, z, precision)
    if precision == "fp32":
        assert max_abs_error(got, ref) <= FP32_MAX_ABS
    else:
        assert psnr(got, ref) >= FP16_MIN_PSNR


def test_pte_without_coreml_delegate_is_a_user_error(tmp_path):
    from executorch.exir import to_edge

    class AddOne(torch.nn.Module):
        def forward(self, x):
            return x + 1

    ep = torch.export.export(AddOne(), (torch.zeros(2),), strict=False)
    pte = tmp_path / "plain.pte"
    pte.write_bytes(to_edge(ep).to_executorch().buffer)
    with pytest.raises(UserError, match="no Core ML delegate"):
        mr.extract_coreml_from_pte(pte, tmp_path / "x")
    with pytest.raises(UserError, match="not found"):
        mr.extract_coreml_from_pte(tmp_path / "missing.pte")
