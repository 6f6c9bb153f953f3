"""Reference evaluator of Core ML ML programs (``.mlpackage``) on any OS, in fp32 or fp16 emulation.

coremltools predicts only on macOS; this module reads the saved program itself and evaluates it op by
op with torch on the CPU, so Core ML artifacts can be checked numerically on Linux (CI):

- the MIL program comes from ``Data/com.apple.CoreML/model.mlmodel`` (``coremltools.proto.Model_pb2``),
  weights from the blob file (``weights/weight.bin``: a 64-byte header, then per blob a 64-byte record,
  sentinel ``0xDEADBEEF``, data type, size, data offset), inline values from the protobuf;
- ``precision="fp32"``: every floating-point value is computed and kept in fp32 (casts between float
  types are exact), which checks the graph and its weights;
- ``precision="fp16"``: the output of every op (and every input and constant) is rounded to half
  precision, as the Neural Engine computes whatever the program declares; ops compute from those fp16
  values in fp32 and round once (one rounding per op, fp32 accumulation). Casts are honoured (to int:
  truncation; to bool: non-zero).

Each op's result is checked against the shape the program declares for it (a mismatch raises
:class:`UserError`: the program is inconsistent). An op type the evaluator does not implement is refused
up front with a :class:`UserError` that names it; nothing is ever skipped.

The ExecuTorch Core ML delegate embeds such a package in its ``.pte`` (the delegate blob is the package
folder flattened by ``executorchcoreml``); :func:`extract_coreml_from_pte` unpacks it so it can be
evaluated the same way.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from turbo_vaed.errors import UserError

__all__ = ["PRECISIONS", "Program", "Op", "TensorSpec", "load_program", "program_from_spec", "evaluate", "op_types",
           "supported_ops", "unsupported_ops", "extract_coreml_programs", "extract_coreml_from_pte",
           "delegate_io_names"]

PRECISIONS = ("fp32", "fp16")
SPEC_RELPATH = Path("Data/com.apple.CoreML/model.mlmodel")
BLOB_SENTINEL = 0xDEADBEEF
BLOB_HEADER_BYTES = 64
COREML_BACKEND_ID = "CoreMLBackend"

# MIL DataType enum values (coremltools.proto.MIL_pb2.DataType) -> short MIL names
_DTYPE_NAMES = {1: "bool", 2: "string", 10: "fp16", 11: "fp32", 12: "fp64", 13: "bf16", 21: "int8", 22: "int16",
                23: "int32", 24: "int64", 25: "int4", 31: "uint8", 32: "uint16", 33: "uint32", 34: "uint64",
                35: "uint4", 36: "uint2", 37: "uint1", 38: "uint6", 39: "uint3", 40: "fp8e4m3", 41: "fp8e5m2"}
_NP_DTYPES = {"bool": np.bool_, "fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int8": np.int8,
              "int16": np.int16, "int32": np.int32, "int64": np.int64, "uint8": np.uint8, "uint16": np.uint16,
              "uint32": np.uint32, "uint64": np.uint64}
# how values of each MIL type are held while evaluating (floats always as float32 storage)
_TORCH_DTYPES = {"bool": torch.bool, "fp16": torch.float32, "fp32": torch.float32, "fp64": torch.float32,
                 "int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
                 "uint8": torch.uint8, "uint16": torch.int32, "uint32": torch.int64, "uint64": torch.int64}
_FLOAT_NAMES = ("fp16", "fp32", "fp64")


# ----------------------------------------------------------------------------------------- program model


@dataclass(frozen=True)
class TensorSpec:
    """A named value's declared type: MIL dtype name (``fp16``, ``int32``...) and shape (``None``: unknown)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass
class Op:
    """One MIL operation: ``inputs`` maps a parameter to its bindings, each a value name (``str``) or an
    inline value (:class:`_Inline`)."""

    type: str
    name: str
    inputs: dict[str, list[str | _Inline]]
    outputs: list[TensorSpec]
    has_blocks: bool = False


@dataclass(frozen=True)
class _Inline:
    value: Any


@dataclass
class Program:
    """A parsed ML program function: inputs, outputs, ops (consts folded into ``consts``) and the spec."""

    path: Path | None
    function: str
    opset: str
    spec_version: int
    inputs: list[TensorSpec]
    outputs: list[str]
    ops: list[Op]
    consts: dict[str, Any]
    const_specs: dict[str, TensorSpec]
    spec: Any = field(repr=False, default=None)
    n_const_ops: int = 0

    @property
    def output_specs(self) -> dict[str, TensorSpec]:
        """Declared types of the function's outputs (from the op that makes each)."""
        made = {o.name: o for op in self.ops for o in op.outputs}
        made.update({s.name: s for s in self.inputs})
        made.update(self.const_specs)
        return {n: made[n] for n in self.outputs if n in made}


def _dtype_name(code: int) -> str:
    return _DTYPE_NAMES.get(code, f"dtype#{code}")


def _tensor_spec(name: str, vtype) -> TensorSpec:
    kind = vtype.WhichOneof("type")
    if kind == "stateType":  # iOS 18 state: described by its wrapped tensor
        vtype = vtype.stateType.wrappedType
        kind = vtype.WhichOneof("type")
    if kind != "tensorType":
        return TensorSpec(name, kind or "unknown", None)
    tt = vtype.tensorType
    dims: list[int | None] = []
    for d in tt.dimensions:
        dims.append(int(d.constant.size) if d.WhichOneof("dimension") == "constant" else None)
    shape = tuple(dims) if tt.rank >= 0 and len(dims) == tt.rank else None
    return TensorSpec(name, _dtype_name(tt.dataType), shape)


class _Blobs:
    """Reader of a Core ML weight blob file (MIL storage format, version 2)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            if not self.path.is_file():
                raise UserError(f"weight file not found: {self.path}; the .mlpackage is incomplete (re-export it)")
            self._data = self.path.read_bytes()
            if len(self._data) < BLOB_HEADER_BYTES:
                raise UserError(f"weight file {self.path} is truncated ({len(self._data)} bytes)")
        return self._data

    def read(self, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        """The blob whose metadata record sits at ``offset``, as ``dtype`` of ``shape``."""
        if dtype not in _NP_DTYPES:
            raise UserError(f"weights of type {dtype} (at offset {offset} of {self.path.name}) are not supported "
                            "by the MIL reference evaluator: export without weight compression")
        d = self.data
        if offset + 32 > len(d):
            raise UserError(f"weight offset {offset} is outside {self.path} ({len(d)} bytes): re-export the model")
        sentinel, _code, size, data_off = struct.unpack_from("<IIQQ", d, offset)
        if sentinel != BLOB_SENTINEL:
            raise UserError(f"no weight record at offset {offset} of {self.path} (bad sentinel {sentinel:#x})")
        want = int(np.prod(shape, dtype=np.int64)) * np.dtype(_NP_DTYPES[dtype]).itemsize
        if size != want or data_off + size > len(d):
            raise UserError(f"weight record at offset {offset} of {self.path} holds {size} bytes, "
                            f"{dtype}{list(shape)} needs {want}: the package is corrupt")
        return np.frombuffer(d, dtype=_NP_DTYPES[dtype], count=want // np.dtype(_NP_DTYPES[dtype]).itemsize,
                             offset=data_off).reshape(shape)


def _decode_value(value, blobs: _Blobs | None, where: str) -> Any:
    """A MIL ``Value`` (immediate or blob-file) as numpy array / str / list of str."""
    spec = _tensor_spec(where, value.type)
    kind = value.WhichOneof("value")
    if spec.shape is None or any(s is None for s in spec.shape):
        raise UserError(f"const {where!r} has no fixed shape: the MIL reference evaluator needs fixed shapes")
    shape = tuple(int(s) for s in spec.shape)  # type: ignore[arg-type]
    if kind == "blobFileValue":
        if blobs is None:
            raise UserError(f"const {where!r} lives in a weight file but the program was loaded without one")
        return blobs.read(int(value.blobFileValue.offset), spec.dtype, shape)
    if kind != "immediateValue":
        raise UserError(f"const {where!r} has no value ({kind}): the program is corrupt")
    imm = value.immediateValue
    if imm.WhichOneof("value") != "tensor":
        raise UserError(f"const {where!r} is a {imm.WhichOneof('value')}, not a tensor: not supported")
    t = imm.tensor
    field_name = t.WhichOneof("value")
    if spec.dtype == "string":
        vals = list(t.strings.values)
        return vals[0] if shape == () and len(vals) == 1 else vals
    if spec.dtype not in _NP_DTYPES:
        raise UserError(f"const {where!r} has type {spec.dtype}, which the MIL reference evaluator does not support")
    npdt = _NP_DTYPES[spec.dtype]
    if field_name == "bytes":
        raw = t.bytes.values
        raw = raw if isinstance(raw, bytes) else b"".join(raw)
        arr = np.frombuffer(raw, dtype=npdt)
    elif field_name is None:
        arr = np.zeros(0, dtype=npdt)
    else:
        arr = np.asarray(list(getattr(t, field_name).values)).astype(npdt)
    n = int(np.prod(shape, dtype=np.int64))
    if arr.size != n:
        raise UserError(f"const {where!r} holds {arr.size} values, its type {spec.dtype}{list(shape)} needs {n}")
    return arr.reshape(shape)


def _spec_path(path: Path) -> Path:
    """The model spec inside a package (per its ``Manifest.json``, else the usual place)."""
    manifest = path / "Manifest.json"
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text())
            item = m["itemInfoEntries"][m["rootModelIdentifier"]]
            p = path / "Data" / item["path"]
            if p.is_file():
                return p
        except (KeyError, ValueError, TypeError):
            pass
    return path / SPEC_RELPATH


def _read_spec(path: Path):
    from coremltools.proto import Model_pb2

    path = Path(path)
    if path.is_dir():
        spec_file = _spec_path(path)
    elif path.suffix == ".mlmodel" and path.is_file():
        spec_file = path
    else:
        raise UserError(f"not a Core ML package: {path} (expected a .mlpackage folder)")
    if not spec_file.is_file():
        raise UserError(f"{path} has no model spec ({SPEC_RELPATH}): not an ML program package")
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_file.read_bytes())
    except Exception as e:  # protobuf DecodeError
        raise UserError(f"cannot parse the model spec {spec_file}: {type(e).__name__}: {e}") from None
    return spec, spec_file.parent


def program_from_spec(spec, weights_dir: Path | None = None, function: str = "main",
                      path: Path | None = None) -> Program:
    """Parse a ``Model_pb2.Model`` holding an ML program; blob weights are read from ``weights_dir``."""
    if spec.WhichOneof("Type") != "mlProgram":
        raise UserError(f"the Core ML model is a {spec.WhichOneof('Type')}, not an ML program: the MIL reference "
                        "evaluator reads ML programs (convert_to='mlprogram')")
    prog = spec.mlProgram
    if function not in prog.functions:
        raise UserError(f"the ML program has no function {function!r} (has: {', '.join(prog.functions)})")
    fn = prog.functions[function]
    opset = fn.opset if fn.opset in fn.block_specializations else next(iter(fn.block_specializations))
    block = fn.block_specializations[opset]
    blobs_by_file: dict[str, _Blobs] = {}

    def blobs_for(value) -> _Blobs | None:
        if value.WhichOneof("value") != "blobFileValue" or weights_dir is None:
            return None
        fname = value.blobFileValue.fileName
        rel = fname.split("@model_path/", 1)[1] if fname.startswith("@model_path/") else fname
        if rel not in blobs_by_file:
            blobs_by_file[rel] = _Blobs(Path(weights_dir) / rel)
        return blobs_by_file[rel]

    consts: dict[str, Any] = {}
    const_specs: dict[str, TensorSpec] = {}
    ops: list[Op] = []
    n_const = 0
    for i, o in enumerate(block.operations):
        attr_name = o.attributes["name"].immediateValue.tensor.strings.values if "name" in o.attributes else []
        name = attr_name[0] if len(attr_name) else (o.outputs[0].name if o.outputs else f"op_{i}")
        if o.type == "const":
            n_const += 1
            val = o.attributes["val"]
            out = o.outputs[0].name
            consts[out] = _decode_value(val, blobs_for(val), out)
            const_specs[out] = _tensor_spec(out, o.outputs[0].type)
            continue
        inputs: dict[str, list[str | _Inline]] = {}
        for key, arg in o.inputs.items():
            binds: list[str | _Inline] = []
            for b in arg.arguments:
                if b.WhichOneof("binding") == "value":
                    binds.append(_Inline(_decode_value(b.value, blobs_for(b.value), f"{name}.{key}")))
                else:
                    binds.append(b.name)
            inputs[key] = binds
        outs = [_tensor_spec(v.name, v.type) for v in o.outputs]
        ops.append(Op(o.type, name, inputs, outs, has_blocks=len(o.blocks) > 0))
    return Program(path=path, function=function, opset=opset, spec_version=int(spec.specificationVersion),
                   inputs=[_tensor_spec(v.name, v.type) for v in fn.inputs], outputs=list(block.outputs),
                   ops=ops, consts=consts, const_specs=const_specs, spec=spec, n_const_ops=n_const)


def load_program(path: str | Path, function: str = "main") -> Program:
    """Read the ML program saved in a ``.mlpackage`` (spec + weight blobs); works on any OS."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"Core ML package not found: {path}")
    spec, model_dir = _read_spec(path)
    return program_from_spec(spec, model_dir, function, path)


def op_types(program: Program | str | Path, include_const: bool = False) -> Counter:
    """How many ops of each type the program has (``const`` ops only with ``include_const``)."""
    prog = program if isinstance(program, Program) else load_program(program)
    c = Counter(op.type for op in prog.ops)
    if include_const and prog.n_const_ops:
        c["const"] = prog.n_const_ops
    return c


# ------------------------------------------------------------------------------------------ evaluation


class _Ctx:
    """Evaluation state: values by name, the precision and helpers to read op inputs."""

    def __init__(self, program: Program, precision: str) -> None:
        self.program = program
        self.fp16 = precision == "fp16"
        self.env: dict[str, Any] = {}
        self._half: torch.Tensor | None = None

    def round(self, v: Any) -> Any:
        """``v`` rounded to half precision in fp16 mode (in place: rounding is idempotent, aliases are safe)."""
        if self.fp16 and isinstance(v, torch.Tensor) and v.is_floating_point():
            n = v.numel()
            if self._half is None or self._half.numel() < n:
                self._half = torch.empty(n, dtype=torch.float16)
            buf = self._half[:n].view(v.shape)
            buf.copy_(v)
            v.copy_(buf)
        return v

    def _resolve(self, b: str | _Inline) -> Any:
        if isinstance(b, _Inline):
            return self.round(_to_value(b.value))
        if b not in self.env:
            raise UserError(f"the program reads {b!r} before it is defined: the program is corrupt")
        return self.env[b]

    def has(self, op: Op, key: str) -> bool:
        return key in op.inputs and len(op.inputs[key]) > 0

    def get(self, op: Op, key: str, default: Any = None) -> Any:
        if not self.has(op, key):
            if default is _REQUIRED:
                raise UserError(f"op {op.name!r} ({op.type}) has no input {key!r}: the program is corrupt")
            return default
        return self._resolve(op.inputs[key][0])

    def req(self, op: Op, key: str) -> Any:
        return self.get(op, key, _REQUIRED)

    def tensors(self, op: Op, key: str) -> list[Any]:
        return [self._resolve(b) for b in op.inputs.get(key, [])]


_REQUIRED = object()


def _to_value(v: Any) -> Any:
    """A decoded const as an evaluation value (torch tensor, or str / list of str)."""
    if isinstance(v, (str, list)):
        return v
    arr = np.asarray(v)
    if arr.dtype == np.float16 or arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.int32)
    elif arr.dtype in (np.uint32, np.uint64):
        arr = arr.astype(np.int64)
    return torch.from_numpy(np.array(arr, copy=True, order="C"))  # own copy: fp16 rounding works in place


def _ints(v: Any) -> list[int]:
    if isinstance(v, torch.Tensor):
        return [int(x) for x in v.reshape(-1).tolist()]
    return [int(x) for x in np.asarray(v).reshape(-1)]


def _int(v: Any) -> int:
    vals = _ints(v)
    if len(vals) != 1:
        raise ValueError(f"expected one integer, got {vals}")
    return vals[0]


def _bools(v: Any, n: int) -> list[bool]:
    if v is None:
        return [False] * n
    return [bool(x) for x in v.reshape(-1).tolist()]


def _scalar(v: Any) -> float:
    return float(v.reshape(-1)[0]) if isinstance(v, torch.Tensor) else float(v)


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


OpFn = Callable[[_Ctx, Op], Any]
_OPS: dict[str, OpFn] = {}


def _register(*names: str) -> Callable[[OpFn], OpFn]:
    def deco(fn: OpFn) -> OpFn:
        for n in names:
            _OPS[n] = fn
        return fn

    return deco


def supported_ops() -> tuple[str, ...]:
    """The MIL op types this evaluator implements (plus ``const``)."""
    return tuple(sorted({"const", *_OPS}))


def unsupported_ops(program: Program) -> list[Op]:
    """Ops of ``program`` the evaluator cannot run (unknown type, or nested blocks)."""
    return [op for op in program.ops if op.type not in _OPS or op.has_blocks]


# --- elementwise binary -------------------------------------------------------------------------------


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> OpFn:
    def run(ctx: _Ctx, op: Op) -> torch.Tensor:
        x, y = ctx.req(op, "x"), ctx.req(op, "y")
        return fn(x, y)

    return run


def _real_div(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.is_floating_point() or y.is_floating_point():
        return x / y
    return torch.div(x, y, rounding_mode="trunc")  # int / int: numpy division, then truncated to int


for _name, _fn in {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "real_div": _real_div,
    "floor_div": lambda x, y: torch.div(x, y, rounding_mode="floor"),
    "mod": torch.remainder, "pow": torch.pow, "maximum": torch.maximum, "minimum": torch.minimum,
    "equal": torch.eq, "not_equal": torch.ne, "less": torch.lt, "less_equal": torch.le,
    "greater": torch.gt, "greater_equal": torch.ge, "logical_and": torch.logical_and,
    "logical_or": torch.logical_or, "logical_xor": torch.logical_xor,
}.items():
    _OPS[_name] = _binary(_fn)


# --- elementwise unary and activations -------------------------------------------------------------------


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> OpFn:
    def run(ctx: _Ctx, op: Op) -> torch.Tensor:
        return fn(ctx.req(op, "x"))

    return run


for _name, _ufn in {
    "abs": torch.abs, "sqrt": torch.sqrt, "exp": torch.exp, "exp2": torch.exp2, "sin": torch.sin,
    "cos": torch.cos, "tan": torch.tan, "tanh": torch.tanh, "asin": torch.asin, "acos": torch.acos,
    "atan": torch.atan, "atanh": torch.atanh, "sinh": torch.sinh, "cosh": torch.cosh, "erf": torch.erf,
    "ceil": torch.ceil, "floor": torch.floor, "round": torch.round, "sign": torch.sign, "square": torch.square,
    "logical_not": torch.logical_not, "relu": torch.relu, "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
    "sigmoid": torch.sigmoid, "silu": lambda x: x * torch.sigmoid(x),
    "softplus": lambda x: torch.logaddexp(x, torch.zeros_like(x)), "softsign": lambda x: x / (1 + x.abs()),
    "identity": lambda x: x,
}.items():
    _OPS[_name] = _unary(_ufn)


@_register("rsqrt")
def _rsqrt(ctx: _Ctx, op: Op) -> torch.Tensor:
    return torch.rsqrt(ctx.req(op, "x") + _scalar(ctx.get(op, "epsilon", torch.tensor(1e-12))))


@_register("inverse")
def _inverse(ctx: _Ctx, op: Op) -> torch.Tensor:
    return 1.0 / (ctx.req(op, "x") + _scalar(ctx.get(op, "epsilon", torch.tensor(1e-4))))


@_register("log")
def _log(ctx: _Ctx, op: Op) -> torch.Tensor:
    return torch.log(ctx.req(op, "x") + _scalar(ctx.get(op, "epsilon", torch.tensor(1e-45))))


@_register("clip")
def _clip(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    return torch.minimum(torch.maximum(x, ctx.req(op, "alpha")), ctx.req(op, "beta"))


@_register("threshold")
def _threshold(ctx: _Ctx, op: Op) -> torch.Tensor:
    return torch.maximum(ctx.req(op, "x"), ctx.req(op, "alpha"))


def _alpha(ctx: _Ctx, op: Op, default: float) -> float:
    return _scalar(ctx.get(op, "alpha", torch.tensor(default)))


def _beta(ctx: _Ctx, op: Op, default: float) -> float:
    return _scalar(ctx.get(op, "beta", torch.tensor(default)))


@_register("leaky_relu")
def _leaky_relu(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    return torch.where(x < 0, x * _alpha(ctx, op, 0.01), x)


@_register("elu")
def _elu(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    return torch.where(x < 0, _alpha(ctx, op, 1.0) * torch.expm1(x), x)


@_register("clamped_relu")
def _clamped_relu(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    a, b = _alpha(ctx, op, 0.0), _beta(ctx, op, 6.0)
    return torch.clamp(x, min=0.0).clamp(max=b) + torch.clamp(torch.clamp(x, max=0.0) * a, max=b)


@_register("thresholded_relu")
def _thresholded_relu(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    return torch.where(x < _alpha(ctx, op, 1.0), torch.zeros_like(x), x)


@_register("linear_activation")
def _linear_activation(ctx: _Ctx, op: Op) -> torch.Tensor:
    return ctx.req(op, "x") * _alpha(ctx, op, 1.0) + _beta(ctx, op, 0.0)


@_register("scaled_tanh")
def _scaled_tanh(ctx: _Ctx, op: Op) -> torch.Tensor:
    return _alpha(ctx, op, 1.0) * torch.tanh(ctx.req(op, "x") * _beta(ctx, op, 1.0))


@_register("sigmoid_hard")
def _sigmoid_hard(ctx: _Ctx, op: Op) -> torch.Tensor:
    return torch.clamp(ctx.req(op, "x") * _alpha(ctx, op, 0.2) + _beta(ctx, op, 0.5), 0.0, 1.0)


def _channel_param(p: torch.Tensor, rank: int) -> torch.Tensor:
    return p.reshape([1, -1] + [1] * (rank - 2))


@_register("prelu")
def _prelu(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    a = _channel_param(ctx.req(op, "alpha"), x.dim())
    return torch.clamp(x, min=0.0) + torch.clamp(x, max=0.0) * a


@_register("softplus_parametric")
def _softplus_parametric(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    a, b = (_channel_param(ctx.req(op, k), x.dim()) for k in ("alpha", "beta"))
    bx = b * x
    return a * torch.logaddexp(bx, torch.zeros_like(bx))


@_register("gelu")
def _gelu(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    mode = ctx.get(op, "mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise UserError(f"op {op.name!r}: gelu mode {mode!r} is not one of EXACT, TANH_APPROXIMATION, "
                    "SIGMOID_APPROXIMATION")


@_register("softmax")
def _softmax(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    return torch.softmax(x, dim=_int(ctx.get(op, "axis", torch.tensor(-1))))


@_register("cast")
def _cast(ctx: _Ctx, op: Op) -> torch.Tensor:
    x, dtype = ctx.req(op, "x"), ctx.req(op, "dtype")
    if dtype not in _TORCH_DTYPES:
        raise UserError(f"op {op.name!r}: cast to {dtype!r} is not supported by the MIL reference evaluator")
    if dtype in _FLOAT_NAMES:  # fp32 mode: exact; fp16 mode: every float is rounded after the op anyway
        return x.to(torch.float32)
    if dtype == "bool":
        return x != 0
    if x.is_floating_point():
        x = torch.trunc(x)  # numpy astype: toward zero
    return x.to(_TORCH_DTYPES[dtype])


# --- reductions ------------------------------------------------------------------------------------------


def _reduce(fn: Callable[[torch.Tensor, list[int], bool], torch.Tensor]) -> OpFn:
    def run(ctx: _Ctx, op: Op) -> torch.Tensor:
        x = ctx.req(op, "x")
        axes_v = ctx.get(op, "axes")
        axes = list(range(x.dim())) if axes_v is None else [_axis(a, x.dim()) for a in _ints(axes_v)]
        keep = bool(ctx.get(op, "keep_dims", torch.tensor(False)))
        if not axes:
            return x
        return fn(x, axes, keep)

    return run


def _amax(x: torch.Tensor, axes: list[int], keep: bool) -> torch.Tensor:
    return torch.amax(x, dim=axes, keepdim=keep)


for _name, _rfn in {
    "reduce_sum": lambda x, a, k: torch.sum(x, dim=a, keepdim=k),
    "reduce_mean": lambda x, a, k: torch.mean(x, dim=a, keepdim=k),
    "reduce_max": _amax,
    "reduce_min": lambda x, a, k: torch.amin(x, dim=a, keepdim=k),
    "reduce_prod": lambda x, a, k: _prod(x, a, k),
    "reduce_l1_norm": lambda x, a, k: torch.sum(x.abs(), dim=a, keepdim=k),
    "reduce_l2_norm": lambda x, a, k: torch.sqrt(torch.sum(x * x, dim=a, keepdim=k)),
    "reduce_sum_square": lambda x, a, k: torch.sum(x * x, dim=a, keepdim=k),
    "reduce_log_sum": lambda x, a, k: torch.log(torch.sum(x, dim=a, keepdim=k)),
    "reduce_log_sum_exp": lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k),
}.items():
    _OPS[_name] = _reduce(_rfn)


def _prod(x: torch.Tensor, axes: list[int], keep: bool) -> torch.Tensor:
    for a in sorted(axes, reverse=True):
        x = torch.prod(x, dim=a, keepdim=keep)
    return x


@_register("reduce_argmax", "reduce_argmin")
def _reduce_arg(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    axis = _axis(_int(ctx.get(op, "axis", torch.tensor(-1))), x.dim())
    keep = bool(ctx.get(op, "keep_dims", torch.tensor(False)))
    fn = torch.argmax if op.type == "reduce_argmax" else torch.argmin
    return fn(x, dim=axis, keepdim=keep).to(torch.int32)


# --- tensor shape and layout ops -------------------------------------------------------------------------


@_register("reshape")
def _reshape(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    shape = _ints(ctx.req(op, "shape"))
    out = list(shape)
    for i, s in enumerate(shape):  # iOS 17: each 0 copies the input dim at the same position from the right
        if s == 0:
            j = x.dim() - (len(shape) - i)
            out[i] = x.shape[j] if 0 <= j < x.dim() else 1
    return x.reshape(out)


@_register("transpose")
def _transpose(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    perm = [_axis(p, x.dim()) for p in _ints(ctx.req(op, "perm"))]
    if sorted(perm) != list(range(x.dim())):
        raise UserError(f"op {op.name!r}: transpose perm {perm} is not a permutation of rank {x.dim()}")
    return x.permute(perm)


@_register("squeeze")
def _squeeze(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    axes_v = ctx.get(op, "axes")
    if axes_v is None:
        return x.reshape([s for s in x.shape if s != 1])
    axes = {_axis(a, x.dim()) for a in _ints(axes_v)}
    if any(x.shape[a] != 1 for a in axes):
        raise UserError(f"op {op.name!r}: squeeze of axes {sorted(axes)} that are not 1 in {tuple(x.shape)}")
    return x.reshape([s for i, s in enumerate(x.shape) if i not in axes])


@_register("expand_dims")
def _expand_dims(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    axes = _ints(ctx.req(op, "axes"))
    rank = x.dim() + len(axes)
    shape = list(x.shape)
    for a in sorted(_axis(a, rank) for a in axes):
        shape.insert(a, 1)
    return x.reshape(shape)


@_register("flatten2d")
def _flatten2d(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    axis = _axis(_int(ctx.get(op, "axis", torch.tensor(1))), x.dim())
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


@_register("concat")
def _concat(ctx: _Ctx, op: Op) -> torch.Tensor:
    vals = ctx.tensors(op, "values")
    axis = _axis(_int(ctx.req(op, "axis")), vals[0].dim())
    if bool(ctx.get(op, "interleave", torch.tensor(False))):
        st = torch.stack(vals, dim=axis + 1)  # [..., n_axis, k, ...] -> interleaved along axis
        shape = list(vals[0].shape)
        shape[axis] *= len(vals)
        return st.reshape(shape)
    return torch.cat(vals, dim=axis)


@_register("stack")
def _stack(ctx: _Ctx, op: Op) -> torch.Tensor:
    vals = ctx.tensors(op, "values")
    return torch.stack(vals, dim=_axis(_int(ctx.req(op, "axis")), vals[0].dim() + 1))


@_register("split")
def _split(ctx: _Ctx, op: Op) -> list[torch.Tensor]:
    x = ctx.req(op, "x")
    axis = _axis(_int(ctx.req(op, "axis")), x.dim())
    sizes_v = ctx.get(op, "split_sizes")
    if sizes_v is not None:
        sizes = _ints(sizes_v)
    else:
        n = _int(ctx.req(op, "num_splits"))
        step = math.ceil(x.shape[axis] / n)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(n)]
    return list(torch.split(x, sizes, dim=axis))


def _slice_indices(dim: int, b: int | None, e: int | None, s: int) -> list[int]:
    return list(range(*slice(b, e, s).indices(dim)))


@_register("slice_by_index")
def _slice_by_index(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    r = x.dim()
    begin, end = _ints(ctx.req(op, "begin")), _ints(ctx.req(op, "end"))
    stride_v = ctx.get(op, "stride")
    stride = [1] * r if stride_v is None else _ints(stride_v)
    bm, em, sm = (_bools(ctx.get(op, k), r) for k in ("begin_mask", "end_mask", "squeeze_mask"))
    if not (len(begin) == len(end) == len(stride) == r):
        raise UserError(f"op {op.name!r}: slice_by_index begin/end/stride lengths do not match rank {r}")
    out = x
    squeeze: list[int] = []
    for i in range(r):
        n = x.shape[i]
        if sm[i]:
            idx = begin[i] + n if begin[i] < 0 else begin[i]
            out = out.narrow(i, idx, 1)
            squeeze.append(i)
            continue
        if stride[i] == 0:
            raise UserError(f"op {op.name!r}: slice_by_index stride 0 on axis {i}")
        b = None if bm[i] else begin[i]
        e = None if em[i] else end[i]
        if stride[i] == 1:
            start, stop, _ = slice(b, e, 1).indices(n)
            out = out.narrow(i, start, max(stop - start, 0))
        else:
            idx = torch.tensor(_slice_indices(n, b, e, stride[i]), dtype=torch.long)
            out = out.index_select(i, idx)
    if squeeze:
        out = out.reshape([s for i, s in enumerate(out.shape) if i not in squeeze])
    return out


@_register("slice_by_size")
def _slice_by_size(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    begin, size = _ints(ctx.req(op, "begin")), _ints(ctx.req(op, "size"))
    out = x
    for i, (b, s) in enumerate(zip(begin, size, strict=True)):
        b = b + x.shape[i] if b < 0 else b
        out = out.narrow(i, b, x.shape[i] - b if s == -1 else s)
    return out


@_register("tile")
def _tile(ctx: _Ctx, op: Op) -> torch.Tensor:
    return ctx.req(op, "x").repeat(_ints(ctx.req(op, "reps")))


@_register("reverse")
def _reverse(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    axes_v = ctx.get(op, "axes")
    axes = list(range(x.dim())) if axes_v is None else [_axis(a, x.dim()) for a in _ints(axes_v)]
    return torch.flip(x, axes)


@_register("pad")
def _pad(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    pad = _ints(ctx.req(op, "pad"))
    mode = ctx.get(op, "mode", "constant")
    n = len(pad) // 2
    tpad: list[int] = []
    for d in reversed(range(n)):  # F.pad lists the last dim first
        tpad += [pad[2 * d], pad[2 * d + 1]]
    if mode == "constant":
        return F.pad(x, tpad, value=_scalar(ctx.get(op, "constant_val", torch.tensor(0.0))))
    if mode in ("reflect", "replicate"):
        lead = x.dim() - n  # torch pads the last n dims of a (N, C, *n) tensor: fold the rest into N, C=1
        y = x.reshape(-1, 1, *x.shape[lead:]) if lead != 2 else x
        y = F.pad(y, tpad, mode=mode)
        return y.reshape(*x.shape[:lead], *y.shape[2:]) if lead != 2 else y
    raise UserError(f"op {op.name!r}: pad mode {mode!r} is not one of constant, reflect, replicate")


@_register("pixel_shuffle")
def _pixel_shuffle(ctx: _Ctx, op: Op) -> torch.Tensor:
    return F.pixel_shuffle(ctx.req(op, "x"), _int(ctx.req(op, "upscale_factor")))


@_register("pixel_unshuffle")
def _pixel_unshuffle(ctx: _Ctx, op: Op) -> torch.Tensor:
    return F.pixel_unshuffle(ctx.req(op, "x"), _int(ctx.req(op, "downscale_factor")))


@_register("depth_to_space")
def _depth_to_space(ctx: _Ctx, op: Op) -> torch.Tensor:
    """DCR order (TensorFlow): channel index = (i * bs + j) * C' + c."""
    x = ctx.req(op, "x")
    bs = _int(ctx.req(op, "block_size"))
    n, c, h, w = x.shape
    y = x.reshape(n, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (bs * bs), h * bs, w * bs)


@_register("space_to_depth")
def _space_to_depth(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    bs = _int(ctx.req(op, "block_size"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * bs * bs, h // bs, w // bs)


@_register("gather")
def _gather(ctx: _Ctx, op: Op) -> torch.Tensor:
    x, idx = ctx.req(op, "x"), ctx.req(op, "indices")
    axis = _axis(_int(ctx.get(op, "axis", torch.tensor(0))), x.dim())
    if _int(ctx.get(op, "batch_dims", torch.tensor(0))) != 0:
        raise UserError(f"op {op.name!r}: gather with batch_dims != 0 is not supported by the MIL reference evaluator")
    flat = idx.reshape(-1).long()
    flat = torch.where(flat < 0, flat + x.shape[axis], flat)
    y = x.index_select(axis, flat)
    return y.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1:])


@_register("gather_along_axis")
def _gather_along_axis(ctx: _Ctx, op: Op) -> torch.Tensor:
    x, idx = ctx.req(op, "x"), ctx.req(op, "indices")
    axis = _axis(_int(ctx.get(op, "axis", torch.tensor(0))), x.dim())
    idx = idx.long()
    return torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx))


@_register("select")
def _select(ctx: _Ctx, op: Op) -> torch.Tensor:
    return torch.where(ctx.req(op, "cond").bool(), ctx.req(op, "a"), ctx.req(op, "b"))


@_register("shape")
def _shape(ctx: _Ctx, op: Op) -> torch.Tensor:
    return torch.tensor(list(ctx.req(op, "x").shape), dtype=torch.int32)


@_register("fill")
def _fill(ctx: _Ctx, op: Op) -> torch.Tensor:
    val = ctx.get(op, "value", torch.tensor(0.0))
    return torch.full(_ints(ctx.req(op, "shape")), val.reshape(-1)[0].item(), dtype=val.dtype)


@_register("fill_like")
def _fill_like(ctx: _Ctx, op: Op) -> torch.Tensor:
    ref = ctx.req(op, "ref_tensor")
    val = ctx.get(op, "value", torch.tensor(0.0))
    return torch.full(tuple(ref.shape), val.reshape(-1)[0].item(), dtype=val.dtype)


@_register("range_1d")
def _range_1d(ctx: _Ctx, op: Op) -> torch.Tensor:
    s, e, st = (ctx.req(op, k) for k in ("start", "end", "step"))
    return torch.arange(s.item(), e.item(), st.item(), dtype=s.dtype)


# --- linear algebra, normalisation -----------------------------------------------------------------------


@_register("matmul")
def _matmul(ctx: _Ctx, op: Op) -> torch.Tensor:
    x, y = ctx.req(op, "x"), ctx.req(op, "y")
    if bool(ctx.get(op, "transpose_x", torch.tensor(False))) and x.dim() >= 2:
        x = x.transpose(-1, -2)
    if bool(ctx.get(op, "transpose_y", torch.tensor(False))) and y.dim() >= 2:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


@_register("linear")
def _linear(ctx: _Ctx, op: Op) -> torch.Tensor:
    return F.linear(ctx.req(op, "x"), ctx.req(op, "weight"), ctx.get(op, "bias"))


@_register("batch_norm")
def _batch_norm(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    mean, var = (_channel_param(ctx.req(op, k), x.dim()) for k in ("mean", "variance"))
    eps = _scalar(ctx.get(op, "epsilon", torch.tensor(1e-5)))
    y = (x - mean) / torch.sqrt(var + eps)
    g, b = ctx.get(op, "gamma"), ctx.get(op, "beta")
    if g is not None:
        y = y * _channel_param(g, x.dim())
    if b is not None:
        y = y + _channel_param(b, x.dim())
    return y


@_register("instance_norm")
def _instance_norm(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    axes = list(range(2, x.dim()))
    eps = _scalar(ctx.get(op, "epsilon", torch.tensor(1e-5)))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    g, b = ctx.get(op, "gamma"), ctx.get(op, "beta")
    if g is not None:
        y = y * _channel_param(g, x.dim())
    if b is not None:
        y = y + _channel_param(b, x.dim())
    return y


@_register("layer_norm")
def _layer_norm(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    axes_v = ctx.get(op, "axes")
    axes = sorted(range(x.dim()) if axes_v is None else {_axis(a, x.dim()) for a in _ints(axes_v)})
    eps = _scalar(ctx.get(op, "epsilon", torch.tensor(1e-5)))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    shape = [x.shape[i] if i in axes else 1 for i in range(x.dim())]
    g, b = ctx.get(op, "gamma"), ctx.get(op, "beta")
    if g is not None:
        y = y * g.reshape(shape)
    if b is not None:
        y = y + b.reshape(shape)
    return y


# --- convolution, pooling, resizing ----------------------------------------------------------------------


def _spatial_pads(op: Op, pad_type: str, pad: list[int] | None, in_sizes: list[int], kernel: list[int],
                  strides: list[int], dilations: list[int]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, per MIL ``pad_type``."""
    n = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        p = pad if pad is not None else [0] * (2 * n)
        if len(p) != 2 * n:
            raise UserError(f"op {op.name!r}: custom pad {p} needs {2 * n} values")
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for i, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
            eff = (k - 1) * d + 1
            total = max(0, (math.ceil(i / s) - 1) * s + eff - i)
            small, big = total // 2, total - total // 2
            out.append((big, small) if pad_type == "same_lower" else (small, big))
        return out
    raise UserError(f"op {op.name!r}: pad_type {pad_type!r} is not one of valid, custom, same, same_lower")


def _torch_pad(pads: list[tuple[int, int]]) -> list[int]:
    flat: list[int] = []
    for b, a in reversed(pads):
        flat += [b, a]
    return flat


def _conv_params(ctx: _Ctx, op: Op, n: int) -> tuple[list[int], list[int], str, list[int] | None, int]:
    strides = _ints(ctx.get(op, "strides", torch.ones(n, dtype=torch.int32)))
    dil = _ints(ctx.get(op, "dilations", torch.ones(n, dtype=torch.int32)))
    pad_type = ctx.get(op, "pad_type", "valid")
    pad_v = ctx.get(op, "pad")
    groups = _int(ctx.get(op, "groups", torch.tensor(1)))
    return strides, dil, pad_type, (None if pad_v is None else _ints(pad_v)), groups


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@_register("conv")
def _conv(ctx: _Ctx, op: Op) -> torch.Tensor:
    x, w = ctx.req(op, "x"), ctx.req(op, "weight")
    n = x.dim() - 2
    if n not in _CONV:
        raise UserError(f"op {op.name!r}: conv of a rank-{x.dim()} tensor (1-3 spatial dims only)")
    strides, dil, pad_type, pad, groups = _conv_params(ctx, op, n)
    pads = _spatial_pads(op, pad_type, pad, list(x.shape[2:]), list(w.shape[2:]), strides, dil)
    sym = [b for b, a in pads] if all(b == a for b, a in pads) else None
    if sym is None:
        x = F.pad(x, _torch_pad(pads))
    return _CONV[n](x, w, ctx.get(op, "bias"), stride=strides, padding=sym or 0, dilation=dil, groups=groups)


@_register("conv_transpose")
def _conv_transpose(ctx: _Ctx, op: Op) -> torch.Tensor:
    x, w = ctx.req(op, "x"), ctx.req(op, "weight")  # weight [C_in, C_out / groups, *K]
    n = x.dim() - 2
    if n not in _CONV_T:
        raise UserError(f"op {op.name!r}: conv_transpose of a rank-{x.dim()} tensor (1-3 spatial dims only)")
    strides, dil, pad_type, pad, groups = _conv_params(ctx, op, n)
    y = _CONV_T[n](x, w, ctx.get(op, "bias"), stride=strides, dilation=dil, groups=groups)
    full = list(y.shape[2:])
    out_v = ctx.get(op, "output_shape")
    if pad_type == "custom":
        p = pad if pad is not None else [0] * (2 * n)
        crops = [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    elif pad_type == "valid":
        crops = [(0, 0)] * n
    elif pad_type in ("same", "same_lower"):
        crops = []
        for i in range(n):
            total = max(full[i] - x.shape[2 + i] * strides[i], 0)
            small, big = total // 2, total - total // 2
            crops.append((big, small) if pad_type == "same_lower" else (small, big))
    else:
        raise UserError(f"op {op.name!r}: pad_type {pad_type!r} is not one of valid, custom, same, same_lower")
    for i, (b, a) in enumerate(crops):
        y = y.narrow(2 + i, b, full[i] - b - a)
    if out_v is not None:
        want = _ints(out_v)[-n:]
        for i, s in enumerate(want):
            if y.shape[2 + i] < s:  # output_shape may ask for up to stride-1 more rows/cols at the end
                y = F.pad(y, [0, 0] * (n - 1 - i) + [0, s - y.shape[2 + i]])
            y = y.narrow(2 + i, 0, s)
    return y


def _pool_params(ctx: _Ctx, op: Op, x: torch.Tensor) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    n = x.dim() - 2
    kernel = _ints(ctx.req(op, "kernel_sizes"))
    strides = _ints(ctx.get(op, "strides", torch.ones(n, dtype=torch.int32)))
    pad_v = ctx.get(op, "pad")
    if bool(ctx.get(op, "ceil_mode", torch.tensor(False))):
        raise UserError(f"op {op.name!r} ({op.type}): ceil_mode pooling is not supported by the MIL reference "
                        "evaluator")
    pads = _spatial_pads(op, ctx.get(op, "pad_type", "valid"), None if pad_v is None else _ints(pad_v),
                         list(x.shape[2:]), kernel, strides, [1] * n)
    return kernel, strides, pads


_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


@_register("avg_pool")
def _avg_pool(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    kernel, strides, pads = _pool_params(ctx, op, x)
    n = x.dim() - 2
    xp = F.pad(x, _torch_pad(pads))
    s = _AVG[n](xp, kernel, strides) * float(np.prod(kernel))
    if bool(ctx.get(op, "exclude_padding_from_average", torch.tensor(False))):
        ones = F.pad(torch.ones(1, 1, *x.shape[2:]), _torch_pad(pads))
        cnt = _AVG[n](ones, kernel, strides) * float(np.prod(kernel))
        return s / cnt
    return s / float(np.prod(kernel))


@_register("max_pool")
def _max_pool(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    kernel, strides, pads = _pool_params(ctx, op, x)
    xp = F.pad(x, _torch_pad(pads), value=-math.inf)
    return _MAX[x.dim() - 2](xp, kernel, strides)


def _int_scale(op: Op, v: Any, what: str) -> int:
    s = _scalar(v)
    if s != int(s) or s < 1:
        raise UserError(f"op {op.name!r} ({op.type}): {what} {s} is not a positive integer; fractional "
                        "scales are not supported by the MIL reference evaluator")
    return int(s)


@_register("upsample_nearest_neighbor")
def _upsample_nearest(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    sh = _int_scale(op, ctx.get(op, "scale_factor_height", torch.tensor(1)), "scale_factor_height")
    sw = _int_scale(op, ctx.get(op, "scale_factor_width", torch.tensor(1)), "scale_factor_width")
    return x.repeat_interleave(sh, dim=-2).repeat_interleave(sw, dim=-1)


@_register("upsample_bilinear")
def _upsample_bilinear(ctx: _Ctx, op: Op) -> torch.Tensor:
    x = ctx.req(op, "x")
    sh = _scalar(ctx.get(op, "scale_factor_height", torch.tensor(1.0)))
    sw = _scalar(ctx.get(op, "scale_factor_width", torch.tensor(1.0)))
    align = bool(ctx.get(op, "align_corners", torch.tensor(False)))
    hpc_v = ctx.get(op, "half_pixel_centers")
    hpc = (not align) if hpc_v is None else bool(hpc_v)
    if hpc == align:
        raise UserError(f"op {op.name!r}: upsample_bilinear with align_corners={align}, half_pixel_centers={hpc} "
                        "is not supported by the MIL reference evaluator")
    lead = x.shape[:-2]
    y = x.reshape(-1, 1, *x.shape[-2:])
    size = (int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw)))
    if align:
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=True)
    else:
        y = F.interpolate(y, size=size, scale_factor=None, mode="bilinear", align_corners=False)
    return y.reshape(*lead, *size)


# --- driver -----------------------------------------------------------------------------------------------


# ops whose results are among their (already fp16) inputs' values: no rounding needed in fp16 mode
_EXACT_OPS = frozenset({
    "slice_by_index", "slice_by_size", "concat", "reshape", "transpose", "squeeze", "expand_dims", "flatten2d",
    "pixel_shuffle", "pixel_unshuffle", "depth_to_space", "space_to_depth", "tile", "reverse", "pad", "gather",
    "gather_along_axis", "select", "split", "stack", "maximum", "minimum", "abs", "relu", "relu6", "clip",
    "threshold", "identity", "max_pool", "upsample_nearest_neighbor", "sign", "floor", "ceil", "round",
    "shape", "fill", "fill_like",
})


def _check_supported(program: Program) -> None:
    bad = unsupported_ops(program)
    if bad:
        kinds = Counter(op.type for op in bad)
        first = bad[0]
        listed = ", ".join(f"'{t}' x{n}" for t, n in sorted(kinds.items()))
        raise UserError(f"the ML program uses op type(s) the MIL reference evaluator does not implement: {listed} "
                        f"(first: op '{first.name}' of type '{first.type}'); nothing was evaluated")


def _category(dtype: str) -> str:
    return "float" if dtype in _FLOAT_NAMES else "bool" if dtype == "bool" else "int" if dtype in _NP_DTYPES else dtype


def _check_output(op: Op, spec: TensorSpec, v: Any) -> None:
    if not isinstance(v, torch.Tensor):
        return
    if spec.shape is not None:
        got = tuple(v.shape)
        if len(got) != len(spec.shape) or any(w is not None and w != g for w, g in zip(spec.shape, got, strict=False)):
            raise UserError(f"op '{op.name}' ({op.type}) computes {spec.name} of shape {list(got)}, but the program "
                            f"declares {list(spec.shape)}: the ML program is inconsistent (a corrupt or mis-converted "
                            "op)")
    kind = "float" if v.is_floating_point() else "bool" if v.dtype == torch.bool else "int"
    if _category(spec.dtype) in ("float", "int", "bool") and _category(spec.dtype) != kind:
        raise UserError(f"op '{op.name}' ({op.type}) computes a {kind} tensor {spec.name}, but the program declares "
                        f"{spec.dtype}: the ML program is inconsistent")


def _input_value(spec: TensorSpec, arr: Any, ctx: _Ctx) -> torch.Tensor:
    a = np.asarray(arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else arr)
    if spec.shape is not None and (len(a.shape) != len(spec.shape) or any(
            w is not None and w != g for w, g in zip(spec.shape, a.shape, strict=False))):
        raise UserError(f"input '{spec.name}' has shape {list(a.shape)}, the program takes {list(spec.shape)}")
    if spec.dtype in _NP_DTYPES:
        a = a.astype(_NP_DTYPES[spec.dtype])
    return ctx.round(_to_value(a))


def _to_numpy(v: Any, spec: TensorSpec | None, precision: str) -> Any:
    if not isinstance(v, torch.Tensor):
        return v
    arr = v.detach().cpu().numpy()
    if v.is_floating_point():
        want = np.float16 if (precision == "fp16" and spec is not None and spec.dtype == "fp16") else np.float32
        return arr.astype(want)
    if spec is not None and spec.dtype in _NP_DTYPES:
        return arr.astype(_NP_DTYPES[spec.dtype])
    return arr


def evaluate(program: Program | str | Path, inputs: Mapping[str, Any], precision: str = "fp32",
             check_shapes: bool = True, trace: Callable[[Op, list[Any]], None] | None = None
             ) -> dict[str, np.ndarray]:
    """Run an ML program on ``inputs`` (name -> array) and return its outputs (name -> numpy array).

    ``precision``: ``fp32`` (all floats in fp32) or ``fp16`` (every value rounded to half precision, one
    rounding per op, as the Neural Engine computes). Floating outputs come back as float32, or float16 in
    fp16 mode when the program declares them fp16. ``check_shapes``: compare each op's result with its
    declared shape (a mismatch raises :class:`UserError`). ``trace(op, outputs)`` is called after each op
    (outputs as torch tensors, e.g. to find where fp16 overflows). Unknown ops raise :class:`UserError`
    naming them.
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    prog = program if isinstance(program, Program) else load_program(program)
    _check_supported(prog)
    ctx = _Ctx(prog, precision)
    missing = [s.name for s in prog.inputs if s.name not in inputs]
    extra = sorted(set(inputs) - {s.name for s in prog.inputs})
    if missing or extra:
        raise UserError(f"the ML program takes inputs {[s.name for s in prog.inputs]}, got {sorted(inputs)}")
    for s in prog.inputs:
        ctx.env[s.name] = _input_value(s, inputs[s.name], ctx)
    for name, val in prog.consts.items():
        ctx.env[name] = ctx.round(_to_value(val))
    last_use: dict[str, int] = {}
    for i, op in enumerate(prog.ops):
        for binds in op.inputs.values():
            for b in binds:
                if isinstance(b, str):
                    last_use[b] = i
    keep = set(prog.outputs)
    with torch.no_grad():
        for i, op in enumerate(prog.ops):
            try:
                res = _OPS[op.type](ctx, op)
            except UserError:
                raise
            except Exception as e:  # a shape/type error inside an op: name it
                raise UserError(f"op '{op.name}' ({op.type}) failed: {type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
            outs = res if isinstance(res, (list, tuple)) else [res]
            if len(outs) != len(op.outputs):
                raise UserError(f"op '{op.name}' ({op.type}) made {len(outs)} outputs, the program declares "
                                f"{len(op.outputs)}")
            for spec, v in zip(op.outputs, outs, strict=True):
                if op.type not in _EXACT_OPS:
                    v = ctx.round(v)
                if check_shapes:
                    _check_output(op, spec, v)
                ctx.env[spec.name] = v
            if trace is not None:
                trace(op, [ctx.env[o.name] for o in op.outputs])
            for binds in op.inputs.values():  # free values no later op reads
                for b in binds:
                    if isinstance(b, str) and last_use.get(b) == i and b not in keep:
                        ctx.env.pop(b, None)
    specs = prog.output_specs
    result: dict[str, np.ndarray] = {}
    for name in prog.outputs:
        if name not in ctx.env:
            raise UserError(f"the program's output {name!r} is never computed: the program is corrupt")
        result[name] = _to_numpy(ctx.env[name], specs.get(name), precision)
    return result


# ------------------------------------------------------------------------------- ExecuTorch Core ML delegate


def _pte_coreml_blobs(data: bytes) -> list[tuple[str, bytes]]:
    """(name, flattened package bytes) of every Core ML delegate partition in a .pte program."""
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary
        from executorch.exir.schema import DataLocation
    except ImportError as e:
        raise UserError(f"reading a .pte needs executorch ({e}): pip install executorch") from None
    pte = deserialize_pte_binary(data)
    program = getattr(pte, "program", pte)
    named: dict[str, bytes] = {}
    nd = getattr(pte, "named_data", None)
    if nd is not None:
        for key, entry in nd.pte_data.items():
            named[key] = bytes(nd.buffers[entry.buffer_index])
    found: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for plan in program.execution_plan:
        for i, d in enumerate(plan.delegates):
            if d.id != COREML_BACKEND_ID:
                continue
            if d.processed.location != DataLocation.INLINE:
                raise UserError("the Core ML delegate's data is not stored in the .pte (external segment): "
                                "not supported")
            raw = bytes(program.backend_delegate_data[d.processed.index].data)
            name = f"{plan.name}_{i}"
            if raw.startswith(b"CMJR"):  # JSON reference into named data (multifunction models)
                key = json.loads(raw[4:].decode("utf-8")).get("key")
                if key in seen:
                    continue
                if key not in named:
                    raise UserError(f"the Core ML delegate refers to named data {key!r}, which the .pte lacks")
                seen.add(key)
                raw, name = named[key], str(key)
            found.append((name, raw))
    return found


def extract_coreml_programs(pte: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Unpack every Core ML delegate partition of an ExecuTorch ``.pte`` into ``out_dir``.

    Returns the ``.mlpackage`` folders (``<out_dir>/<partition>/model.mlpackage``). Needs executorch's
    ``executorchcoreml`` extension, which ships in the Linux wheel.
    """
    pte = Path(pte)
    if not pte.is_file():
        raise UserError(f".pte not found: {pte}")
    blobs = _pte_coreml_blobs(pte.read_bytes())
    if not blobs:
        raise UserError(f"{pte.name} has no Core ML delegate partition (export with --delegate coreml)")
    try:
        from executorch.backends.apple.coreml import executorchcoreml
    except ImportError as e:
        raise UserError(f"unpacking the Core ML delegate needs executorch's executorchcoreml extension ({e})") from None
    root = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix=f"{pte.stem}.coreml."))
    paths: list[Path] = []
    for name, raw in blobs:
        dest = root / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        if not executorchcoreml.unflatten_directory_contents(raw, str(dest.resolve())):
            raise UserError(f"cannot unpack the Core ML delegate partition {name} of {pte.name}")
        pkgs = sorted(dest.rglob("*.mlpackage"))
        if not pkgs:
            compiled = sorted(dest.rglob("*.mlmodelc"))
            if compiled:
                raise UserError(f"{pte.name} embeds a compiled Core ML model (.mlmodelc, model_type=compiled_model): "
                                "its program is in Apple's compiled format, which only Core ML reads; export "
                                "with the default model_type to check it here")
            raise UserError(f"the Core ML delegate partition {name} of {pte.name} holds no .mlpackage")
        paths.append(pkgs[0])
    return paths


def extract_coreml_from_pte(pte: str | Path, out_dir: str | Path | None = None) -> Path:
    """The ``.mlpackage`` of an ExecuTorch ``.pte`` whose graph is one Core ML delegate partition."""
    paths = extract_coreml_programs(pte, out_dir)
    if len(paths) != 1:
        raise UserError(f"{Path(pte).name} has {len(paths)} Core ML partitions; use extract_coreml_programs()")
    return paths[0]


def delegate_io_names(package: str | Path) -> tuple[list[str], list[str]]:
    """Input and output names of an extracted delegate package (from its ``metadata.json`` or the program)."""
    package = Path(package)
    meta = package.parent / "metadata.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        if "inputNames" in m and "outputNames" in m:
            return list(m["inputNames"]), list(m["outputNames"])
    prog = load_program(package)
    return [s.name for s in prog.inputs], list(prog.outputs)
