"""Class 3: corrupt artifacts are refused before a native runtime sees them (random bytes as .pte used to abort
the process with rc 134), and a runtime that crashes on a subtler corruption does so in a probe process."""

from __future__ import annotations

import os

import pytest

from tests.test_hardening_common import clean, fake_manifest, tiny, work

FIXTURES = (clean, tiny, work)  # shared fixtures of the hardening suite (test_hardening_common.py)


def _random(path, n=5000, head=b""):
    path.write_bytes(head + os.urandom(n))
    return path


@pytest.mark.parametrize("cmd", ["parity", "bench"])
@pytest.mark.parametrize("suffix, target, needle", [(".pte", "executorch", "not an ExecuTorch program"),
                                                    (".onnx", "onnx", "ONNX"),
                                                    (".ort", "onnx", "ORT-format")])
def test_random_bytes_artifact(clean, tiny, work, cmd, suffix, target, needle):
    art = _random(work / f"model{suffix}")
    fake_manifest(art if suffix != ".ort" else art.with_suffix(".onnx"), tiny["student"], target)
    if suffix == ".ort":
        fake_manifest(art, tiny["student"], target)
    clean(cmd, art, needles=(needle,))


@pytest.mark.parametrize("suffix", [".pte", ".onnx", ".ort"])
def test_random_bytes_without_manifest(clean, work, suffix):
    art = _random(work / f"model{suffix}")
    clean("bench", art)
    clean("parity", art)


@pytest.mark.parametrize("suffix", [".pte", ".onnx"])
def test_export_check_random_bytes(clean, work, suffix):
    clean("export", "--check", _random(work / f"model{suffix}"))


def test_empty_pte(clean, tiny, work):
    art = work / "empty.pte"
    art.write_bytes(b"")
    fake_manifest(art, tiny["student"], "executorch")
    clean("parity", art, needles=("0 bytes",))


def test_pte_with_a_valid_identifier_is_probed_out_of_process(clean, tiny, work):
    """The flatbuffer identifier is right, the rest is noise: the runtime's abort happens in a probe process."""
    art = _random(work / "model.pte", head=b"\x3c\x00\x00\x00ET12eh00")
    fake_manifest(art, tiny["student"], "executorch")
    line = clean("parity", art, needles=("corrupt", "ExecuTorch runtime"))
    assert len(line) < 400  # the child's stderr is not packed into the line
    clean("bench", art, needles=("corrupt",))


def test_mlpackage_without_manifest_json(clean, tiny, work):
    art = work / "model.mlpackage"
    (art / "Data").mkdir(parents=True)
    fake_manifest(art, tiny["student"], "coreml")
    clean("parity", art, needles=("Manifest.json",))


def test_onnx_truncated_protobuf(clean, tiny, work):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("latents", TensorProto.FLOAT, [1, 16, 4, 4])
    y = helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 16, 4, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["latents"], ["frames"])], "g", [x], [y]))
    art = work / "relu.onnx"
    onnx.save(model, str(art))
    art.write_bytes(art.read_bytes()[:-9])
    fake_manifest(art, tiny["student"], "onnx")
    clean("parity", art, needles=("relu.onnx",))
