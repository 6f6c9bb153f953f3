"""``accelerate launch -m turbo_vaed.distill [distill options]`` (or torchrun): same code path as the CLI."""

import sys

from turbo_vaed.cli import run

sys.exit(run(["distill", *sys.argv[1:]]))
