"""Class 2: usage errors are one line and exit 2 (unknown command or option, a bad value, a missing argument, an
unreadable path); Ctrl-C is ``interrupted`` and 130."""

from __future__ import annotations

import os
import signal

import pytest

from tests.test_hardening_common import clean, tiny, tree, work

FIXTURES = (clean, tiny, work)  # shared fixtures of the hardening suite (tests/test_hardening_common.py)

USAGE = [
    (("frobnicate",), "frobnicate"),
    (("decode", "--no-such-option"), "--no-such-option"),
    (("bench", "--iters", "three"), "--iters"),
    (("bench", "--latent-frames", "1.5"), "--latent-frames"),
    (("decode", "z.safetensors"), "-o"),
    (("parity",), "artifact"),
    (("export", "--target"), "--target"),
    (("encode", "missing.mp4", "-o", "z.safetensors"), "not found"),
    (("decode", "missing.safetensors", "-o", "v.mp4"), "not found"),
    (("bench", "--validate", "missing.json"), "not found"),
    (("import", "nosucharch", "--weights", "w.pth"), "nosucharch"),
]


@pytest.mark.parametrize("argv, needle", USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_usage_errors(clean, argv, needle):
    clean(*argv, needles=(needle,))


def test_unreadable_path(clean, work):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    f = work / "z.safetensors"
    f.write_bytes(b"x" * 100)
    f.chmod(0)
    clean("decode", f, "-o", "v.mp4")


def test_ctrl_c_is_interrupted_130(cli, tiny, work, monkeypatch):
    import turbo_vaed.cli.codec_cmd as codec

    def ctrl_c(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(codec, "write_video", ctrl_c)
    before = tree(work)
    res = cli("decode", tiny["latents"], "-o", "v.mp4", "--checkpoint", tiny["ckpt"])
    assert res.code == 130 and res.err.strip() == "interrupted", (res.code, res.err)
    assert "Traceback" not in res.err + res.out and tree(work) == before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the CLI put Python's handler back
