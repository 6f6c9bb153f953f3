"""Option declarations shared by every command (one place), and the one-time resolution of the choices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import torch
import typer

from turbo_vaed.families import FAMILIES, Family, Resolution, get_family, resolve_res

TEACHER_HELP = ("'reference' (built-in; for another family: that family's random-weight teacher), "
                "'random' (default config, random weights) or a local diffusers VAE folder.")
CHECKPOINT_HELP = ("Decoder: a .safetensors checkpoint, a folder from `turbovaed import`, builtin:reference, or "
                   "'random' (the family's full-size student, seed-0 random weights). Default: the built-in "
                   "student for the reference teacher's family, else random.")
RES_HELP = "256p, 480p, 720p, 1080p or WxH (divisible by the family's spatial factor)."

FamilyOpt = Annotated[Optional[str], typer.Option("--family", "-f", help=f"One of {', '.join(FAMILIES)} "
                                                  "(default: the checkpoint's, else the teacher's).")]
TeacherOpt = Annotated[str, typer.Option("--teacher", help=TEACHER_HELP)]
CheckpointOpt = Annotated[Optional[str], typer.Option("--checkpoint", help=CHECKPOINT_HELP)]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default 2).")]
ResOpt = Annotated[str, typer.Option("--res", "-r", help=RES_HELP)]
ResLongOpt = Annotated[str, typer.Option("--res", help=RES_HELP)]  # where -r already means --runtime (bench)

DEFAULT_THREADS = 2


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` (default 2) to torch; returns it."""
    n = DEFAULT_THREADS if threads is None else int(threads)
    torch.set_num_threads(n)
    return n


@dataclass(frozen=True)
class Choices:
    """The family, teacher and checkpoint a command works with, resolved once from its options."""

    family: Family
    teacher: str
    checkpoint: str | None

    def decoder(self):
        """The decoder (:func:`turbo_vaed.resolve.resolve_decoder`); a random one prints one warning line."""
        from turbo_vaed.console import ShownWarnings
        from turbo_vaed.resolve import RandomStudentWarning, resolve_decoder

        with ShownWarnings(RandomStudentWarning):
            return resolve_decoder(self.family.name, self.checkpoint, self.teacher)

    def teacher_vae(self):
        """The teacher VAE (:func:`turbo_vaed.resolve.resolve_teacher`); a random one prints one warning line."""
        from turbo_vaed.console import ShownWarnings
        from turbo_vaed.resolve import resolve_teacher
        from turbo_vaed.teachers import RandomTeacherWarning

        with ShownWarnings(RandomTeacherWarning):
            return resolve_teacher(self.teacher, self.family.name)

    def resolution(self, res: str) -> Resolution:
        return resolve_res(res, self.family)


def resolve_choices(family: str | None, teacher: str = "reference", checkpoint: str | None = None) -> Choices:
    """Resolve ``--family``/``--teacher``/``--checkpoint`` into typed values (one-line errors)."""
    from turbo_vaed.resolve import resolve_family

    return Choices(get_family(resolve_family(family, teacher, checkpoint)), teacher, checkpoint)
