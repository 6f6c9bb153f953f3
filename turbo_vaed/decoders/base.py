"""The decoder-architecture interface: everything one architecture knows, behind one seam.

An :class:`Architecture` describes a family of decoders (the project's student, the official Turbo-VAED,
TAEHV, Flash-VAED, ...): its config (to/from JSON), how to build one, how to load weights strictly, the 5-D
PyTorch reference forward, the rank-4 lowering for phones, the frame rule and the latent convention.
A :class:`Decoder` is one concrete decoder: an architecture, a config, the built module and where its
weights came from. Exporters, runtimes, parity, bench and eval only ever see these two types.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from turbo_vaed.errors import UserError

LATENT_CONVENTIONS = ("normalised", "raw")


@dataclass(frozen=True)
class Imported:
    """A released checkpoint read by :meth:`Architecture.import_release`: config, decoder state, what was ignored."""

    config: Any
    state: dict[str, torch.Tensor]
    ignored: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # one line each, e.g. "variant taew2_1 (from the file name)"


def check_tail_frames(tail_frames: int, latent_frames: int, frames: int) -> None:
    """A one-line :class:`UserError` unless ``--tail-frames`` splits a chunk of ``latent_frames`` latent frames
    (``frames`` frames out) into groups: 0 (no split) or fewer than ``frames``."""
    if tail_frames >= frames:
        raise UserError(f"--tail-frames {tail_frames} is not fewer than the {frames} frames a chunk of "
                        f"{latent_frames} latent frame(s) makes: use at most {frames - 1}, or drop it")


@dataclass
class StreamStep:
    """A lowered streaming step: ``module(latents [k, C, h, w], first, trim, *states) -> (frames, *states)``.

    ``states``: (name, shape) of each state tensor, all initialised to zeros and fed back from the outputs
    named ``<name>_next``; ``first``/``trim`` are [1, 1, 1, 1] flags (see the architecture's docs);
    ``first_chunk_skip``: leading frames of a trimming first chunk to drop.

    Two protocols. ``controls`` ``("first", "trim")`` (the project's student): frames are the chunk's frames,
    the app applies the frame rule. ``("start", "remaining"[, "trim"])`` (steps built on
    :mod:`turbo_vaed.decoders.timeline`): the module returns ``(frames, valid, *states)`` and the app keeps the
    rows where ``valid`` > 0.5, calls ``flush_chunks`` more times after the last chunk (a non-causal decoder's
    output lags), and restarts (states reset, ``start`` from 0) at each latent index in ``restart_at``.
    """

    module: nn.Module
    latent_frames: int
    frames_per_chunk: int
    states: list[tuple[str, tuple[int, ...]]]
    first_chunk_skip: int
    notes: list[str] = field(default_factory=list)
    controls: tuple[str, ...] = ("first", "trim")
    valid_output: bool = False
    flush_chunks: int = 0
    restart_at: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoadReport:
    """What a strict load found: the state dict to load and the known extras it ignored (by name)."""

    state: dict[str, torch.Tensor]
    ignored: tuple[str, ...] = ()


class Architecture(ABC):
    """One decoder architecture. Subclasses are stateless; register them in ``turbo_vaed.decoders``."""

    name: ClassVar[str]  # e.g. "student", "turbo-vaed", "taehv", "flash-vaed"
    description: ClassVar[str] = ""
    stream_bands: ClassVar[bool] = False  # its stream_step honours LoweringOptions.stream_bands
    stream_tail_frames: ClassVar[bool] = False  # ... and LoweringOptions.stream_tail_frames

    # ---- config
    @abstractmethod
    def config_from_dict(self, d: dict) -> Any:
        """Typed config from its JSON form; a one-line :class:`UserError` if it is invalid."""

    @abstractmethod
    def config_to_dict(self, cfg: Any) -> dict:
        """JSON-serialisable form of ``cfg`` (round-trips through :meth:`config_from_dict`)."""

    @abstractmethod
    def family(self, cfg: Any) -> str:
        """The teacher family (``turbo_vaed.families``) whose latents this decoder reads."""

    # ---- build / load
    @abstractmethod
    def build(self, cfg: Any) -> nn.Module:
        """A randomly initialised 5-D reference module (seed with ``torch.manual_seed`` first)."""

    def strict_state(self, cfg: Any, module: nn.Module, state: dict[str, torch.Tensor], source: str) -> LoadReport:
        """Check ``state`` against ``module``: every tensor present with the right shape, known extras listed.

        Anything else is a one-line :class:`UserError` naming the first offending keys and the counts.
        Architectures override :meth:`known_extra` (and this, for key remapping).
        """
        want = module.state_dict()
        ignored = tuple(sorted(k for k in state if k not in want and self.known_extra(k)))
        unexpected = sorted(k for k in state if k not in want and not self.known_extra(k))
        missing = sorted(k for k in want if k not in state)
        bad = sorted(k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape))
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}"
                            f"{', ...' if len(unexpected) > 3 else ''})")
        if bad:
            k = bad[0]
            problems.append(f"{len(bad)} of the wrong shape ({k}: {list(state[k].shape)}, "
                            f"the config wants {list(want[k].shape)})")
        if problems:
            raise UserError(f"{source} does not fit this {self.name} config: {'; '.join(problems)}: "
                            "pass the config that matches these weights")
        return LoadReport({k: state[k] for k in want}, ignored)

    def import_release(self, weights: Path, config: Path | None, variant: str | None) -> Imported:
        """Read a released checkpoint (safely: :func:`read_weights_file`) into a config and a strict state."""
        raise UserError(f"decoder architecture '{self.name}' has no importer")

    def owns(self, module: nn.Module) -> bool:
        """True when ``module`` is a 5-D reference module of this architecture (see :func:`as_decoder`)."""
        return False

    def config_of(self, module: nn.Module) -> Any:
        """The config a module of this architecture was built from."""
        return module.cfg

    def known_extra(self, key: str) -> bool:
        """True for tensors a released file carries that the decoder does not read (ignored by name)."""
        return False

    # ---- geometry and conventions
    @abstractmethod
    def frames_out(self, cfg: Any, latent_frames: int) -> int:
        """Output frames for ``latent_frames`` latent frames (the teacher's own rule)."""

    def min_latent_frames(self, cfg: Any) -> int:
        """Fewest latent frames one decode call accepts."""
        return 1

    @abstractmethod
    def latent_convention(self, cfg: Any) -> str:
        """``normalised`` (diffusion-space latents) or ``raw`` (what the VAE encoder outputs)."""

    def output_range(self, cfg: Any) -> tuple[float, float]:
        """Value range of the reference output frames."""
        return (-1.0, 1.0)

    def latent_channels(self, cfg: Any) -> int:
        from turbo_vaed.families import get_family

        return get_family(self.family(cfg)).latent_channels

    def spatial_factor(self, cfg: Any) -> int:
        from turbo_vaed.families import get_family

        return get_family(self.family(cfg)).spatial_factor

    def temporal_factor(self, cfg: Any) -> int:
        from turbo_vaed.families import get_family

        return get_family(self.family(cfg)).temporal_factor

    # ---- forward and lowering
    def reference(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """5-D reference decode: latents ``(B, C, T, h, w)`` -> frames ``(B, 3, F, H, W)`` in :meth:`output_range`."""
        return module(z)

    def stream_step(self, module: nn.Module, options: Any, latent_frames: int, h: int, w: int) -> StreamStep:
        """The rank-4 streaming step for chunks of ``latent_frames`` latents of ``h`` x ``w`` (see StreamStep)."""
        raise UserError(f"decoder architecture '{self.name}' has no streaming step yet: export it without --stream "
                        "(a fixed chunk decodes as a whole video)")

    def trims(self, cfg: Any, total_latent_frames: int) -> bool:
        """Whether the full decode of ``total_latent_frames`` trims the first frames (the stream's ``trim`` flag)."""
        return self.frames_out(cfg, total_latent_frames) != total_latent_frames * self.temporal_factor(cfg)

    @abstractmethod
    def lower(self, module: nn.Module, options: Any) -> nn.Module:
        """The rank-4 mobile module: latents ``[T, C, h, w]`` -> frames ``[F, 3, H, W]``, same numbers.

        ``options`` is a :class:`turbo_vaed.lowering.LoweringOptions`. Conv2d only, rank <= 4, no
        interpolate, static shapes, fp16-safe norms when ``options.fp16_safe``.
        """


@dataclass
class Decoder:
    """One concrete decoder: architecture + config + module + the source of its weights.

    ``checkpoint`` is a path, ``builtin:<name>`` or ``random`` (seed-0 random weights).
    """

    arch: Architecture
    config: Any
    module: nn.Module
    checkpoint: str = "random"
    checkpoint_sha256: str | None = None
    provenance: dict = field(default_factory=dict)

    # geometry
    @property
    def family(self) -> str:
        return self.arch.family(self.config)

    @property
    def latent_channels(self) -> int:
        return self.arch.latent_channels(self.config)

    @property
    def spatial_factor(self) -> int:
        return self.arch.spatial_factor(self.config)

    @property
    def temporal_factor(self) -> int:
        return self.arch.temporal_factor(self.config)

    @property
    def latent_convention(self) -> str:
        return self.arch.latent_convention(self.config)

    @property
    def output_range(self) -> tuple[float, float]:
        return self.arch.output_range(self.config)

    def frames_out(self, latent_frames: int) -> int:
        return self.arch.frames_out(self.config, latent_frames)

    @property
    def min_latent_frames(self) -> int:
        return self.arch.min_latent_frames(self.config)

    @property
    def name(self) -> str:
        cfg = self.arch.config_to_dict(self.config)
        return str(cfg.get("name") or self.arch.name)

    # compute
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.arch.reference(self.module, z)

    def eval(self) -> Decoder:
        self.module.eval()
        return self

    def lower(self, options: Any = None) -> nn.Module:
        from turbo_vaed.lowering import LoweringOptions

        with torch.no_grad():
            return self.arch.lower(self.module, options or LoweringOptions()).float().eval()

    def input_shape(self, latent_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``[T, C, h, w]`` of a chunk of ``latent_frames`` decoding to ``width`` x ``height`` pixels."""
        f = self.spatial_factor
        return (latent_frames, self.latent_channels, height // f, width // f)

    def parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    # identity
    def config_dict(self) -> dict:
        return self.arch.config_to_dict(self.config)

    def weights_sha256(self) -> str:
        return weights_sha256(self.module)

    def manifest_section(self) -> dict:
        """Architecture, config, checkpoint and hashes: enough to rebuild the reference of an artifact."""
        cfg = self.config_dict()
        return {
            "arch": self.arch.name,
            "config": cfg,
            "config_sha256": hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest(),
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "weights_sha256": self.weights_sha256(),
            "latent_convention": self.latent_convention,
            "output_range": list(self.output_range),
            "parameters": self.parameters(),
        }


def weights_sha256(module: nn.Module) -> str:
    """Hash of a state dict (sorted keys, fp32 bytes): identifies the reference weights an artifact came from."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode() + b"\0")
        h.update(v.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def read_weights_file(path: str | Path) -> dict:
    """Tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt``/``.ckpt`` read with ``weights_only=True``.

    Nothing in the file is executed: a pickle that holds anything but tensors and plain containers is refused
    with a one-line :class:`UserError`.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {p}; pass --weights PATH to a .pth or .safetensors file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p)))
        except Exception as e:
            raise UserError(f"{p} is not a valid safetensors file ({type(e).__name__}): re-download it") from None
    import pickle

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise UserError(f"{p} holds more than tensors and was not loaded (nothing in it was run): {first}; "
                        "use the released state-dict file") from None
    except Exception as e:
        raise UserError(f"{p} is not a readable PyTorch weights file ({type(e).__name__}): re-download it") from None
    if not isinstance(obj, dict):
        raise UserError(f"{p} holds a {type(obj).__name__}, not a state dict: use the released weights file")
    return obj
