"""Banded streaming step: the student's full-resolution tail in bands of rows, same frames, less memory."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import assert_streams_exactly, full_decode, latents_for, small_student
from turbo_vaed.config import student_families
from turbo_vaed.decoders import as_decoder
from turbo_vaed.errors import UserError
from turbo_vaed.exporters import export_artifact, stream_memory_estimate
from turbo_vaed.lowering import LoweringOptions
from turbo_vaed.streaming import run_stream, stream_decoder, stream_spec, torch_call

TOL_TORCH, TOL_RUNTIME = 1e-5, 1e-4


@pytest.mark.parametrize("family", student_families())
def test_banded_stream_equals_full_decode(family):
    """Any number of bands (up to one per row), any chunk: the frames of the full decode."""
    student = small_student(family)
    dec = as_decoder(student)
    z = latents_for(family, t=5, h=5, w=3, seed=1)
    ref = full_decode(student, z)
    for bands in (2, 3, 7):
        for chunk in (1, 2):
            got = np.concatenate(list(stream_decoder(dec, z, chunk, bands)))
            assert got.shape == ref.shape, (family, bands, chunk)
            assert np.abs(got - ref).max() <= TOL_TORCH, (family, bands, chunk, np.abs(got - ref).max())


def test_state_taps_flavour_is_exact():
    """The ONNX preset's flavour (each conv's last tap read from its next state; bands ordered by a zero-weighted
    edge), banded or not."""
    student = small_student("wan")
    dec = as_decoder(student)
    z = latents_for("wan", t=5, h=5, w=3, seed=4)
    ref = full_decode(student, z)
    x = z[0].transpose(0, 1).contiguous().numpy()
    for bands in (1, 3):
        for chunk in (1, 2):
            opts = LoweringOptions(stream_bands=bands, stream_state_taps=True, stream_band_order=True)
            step = dec.arch.stream_step(dec.module, opts, chunk, 5, 3)
            spec = stream_spec(step)
            got = np.concatenate(list(run_stream(torch_call(step.module, spec), spec, x, True)))
            assert got.shape == ref.shape and np.abs(got - ref).max() <= TOL_TORCH, (bands, chunk)


@pytest.mark.parametrize("family", ["wan", "ltx"])
def test_bands_over_any_number_of_stages_are_exact(family):
    """``stream_band_stages``: the bands span the last stage only (the default), the last two or three: the same
    frames as the full decode, with the states of the banded stages held band by band."""
    student = small_student(family)
    dec = as_decoder(student)
    z = latents_for(family, t=4, h=5, w=3, seed=7)
    ref = full_decode(student, z)
    x = z[0].transpose(0, 1).contiguous().numpy()
    banded = {}
    for stages in (1, 2, 3):
        for chunk in (1, 2):
            opts = LoweringOptions(stream_bands=3, stream_band_stages=stages, stream_state_taps=True,
                                   stream_band_order=True)
            step = dec.arch.stream_step(dec.module, opts, chunk, 5, 3)
            spec = stream_spec(step)
            got = np.concatenate(list(run_stream(torch_call(step.module, spec), spec, x, True)))
            assert got.shape == ref.shape and np.abs(got - ref).max() <= TOL_TORCH, (stages, chunk)
        banded[stages] = sum("_band" in s["name"] for s in spec["states"])
    assert banded[1] < banded[2] <= banded[3]  # a deeper tail holds more of its states band by band


def test_band_stages_flag_names_and_records_the_stages(cli, tmp_path):
    """``export --band-stages 2``: an exact ONNX step named for it; without --bands it is a one-line error."""
    from turbo_vaed.checkpoint import save_student
    from turbo_vaed.targets import load_runner

    student = small_student("wan")
    ck = save_student(student, tmp_path / "s.safetensors")
    res = cli("export", "--target", "onnx", "--res", "48x64", "--checkpoint", ck, "--latent-frames", "1",
              "--precision", "fp32", "--stream", "--band-stages", "2", "-o", tmp_path / "a")
    assert res.code == 2 and "error:" in res.err and "--bands" in res.err and not (tmp_path / "a").exists()
    res = cli("export", "--target", "onnx", "--res", "48x64", "--checkpoint", ck, "--latent-frames", "1",
              "--precision", "fp32", "--stream", "--bands", "3", "--band-stages", "2", "-o", tmp_path / "a")
    assert res.code == 0, res.err
    art = next((tmp_path / "a").glob("*-stream-b3s2.onnx"))
    runner = load_runner(art, 1)
    assert runner.manifest["lowering"]["stream_band_stages"] == 2
    assert_streams_exactly(runner, student, (1, 5), 8, 6, TOL_RUNTIME)


def test_band_context_is_tight():
    """One row of context less than the measured reach changes the frames: the test above can fail."""
    student = small_student("wan")
    dec = as_decoder(student)
    z = latents_for("wan", t=3, h=6, w=3, seed=2)
    step = dec.arch.stream_step(dec.module, LoweringOptions(stream_bands=3), 1, 6, 3)
    assert step.module.reach >= 1 and any("bands" in n for n in step.notes)
    step.module.reach -= 1
    spec = stream_spec(step)
    got = np.concatenate(list(run_stream(torch_call(step.module, spec), spec,
                                         z[0].transpose(0, 1).contiguous().numpy(), True)))
    assert np.abs(got - full_decode(student, z)).max() > 1e-4


def test_banded_onnx_step_is_exact_and_smaller(tmp_path):
    from turbo_vaed.targets import load_runner

    student = small_student("wan")
    res = export_artifact(student, "onnx", "48x64", latent_frames=2, precision="fp32", out_dir=tmp_path,
                          stream=True, bands=3)
    m = res.manifest
    assert m["lowering"]["stream_bands"] == 3 and res.artifact.name.endswith("-stream-b3.onnx")
    plain = export_artifact(student, "onnx", "48x64", latent_frames=2, precision="fp32", out_dir=tmp_path,
                            stream=True).manifest
    # the same latents, controls and frames; the tail's states held band by band, the same elements in all
    assert m["inputs"][:3] == plain["inputs"][:3] and m["outputs"][0] == plain["outputs"][0]
    states, plain_states = m["stream"]["states"], plain["stream"]["states"]
    assert sum(np.prod(s["shape"]) for s in states) == sum(np.prod(s["shape"]) for s in plain_states)
    banded = [s["name"] for s in states if "_band" in s["name"]]
    assert banded and len(banded) % 3 == 0 and len(states) == len(plain_states) + 2 * len(banded) // 3
    outputs = {o["name"]: o["shape"] for o in m["outputs"]}
    assert all(outputs[s["next"]] == s["shape"] for s in states)
    est, est_plain = m["stream"]["memory_estimate"]["fp32"], plain["stream"]["memory_estimate"]["fp32"]
    assert est["peak_live_bytes"] < est_plain["peak_live_bytes"]
    assert_streams_exactly(load_runner(res.artifact, 2), student, (1, 5), 8, 6, TOL_RUNTIME)


def test_memory_estimate_shrinks_with_bands_at_720p():
    """On the meta device (nothing allocated): the default student's 720p step, whole, in 8 bands over the last
    stage, and 1 frame at a time. ORT on the host measured 5.38, 1.73 and 2.77 GB for them (README "Streaming");
    the estimate follows the buffers alive at once, not a multiple of the largest one."""
    from turbo_vaed.checkpoint import DEFAULT_STUDENT
    from turbo_vaed.decoders.store import load_decoder

    dec = load_decoder(DEFAULT_STUDENT)
    shape = dec.input_shape(1, 720, 1280)
    est = {}
    for key, opts in (("whole", LoweringOptions()), ("bands", LoweringOptions(stream_bands=8, stream_band_stages=1)),
                      ("frames", LoweringOptions(stream_tail_frames=1, stream_band_stages=1))):
        step = dec.arch.stream_step(dec.module, opts, 1, shape[2], shape[3])
        est[key] = stream_memory_estimate(step, shape, 4)
    assert est["bands"]["states_bytes"] == est["whole"]["states_bytes"] == est["frames"]["states_bytes"]
    assert 2 * est["bands"]["peak_live_bytes"] < est["whole"]["peak_live_bytes"]
    assert 1.5 * est["frames"]["peak_live_bytes"] < est["whole"]["peak_live_bytes"]
    assert est["bands"]["bytes"] < 2.5 * 2**30 < 3 * 2**30 < est["whole"]["bytes"]


def test_partial_sum_states_shrink_the_output_conv_state_at_720p():
    """With ``stream_partial_sums`` the output conv (24 -> 3 channels, 3 taps) carries 2 frames of 3 channels of
    partial sums instead of 2 frames of its 24 input channels; every other state is unchanged."""
    from turbo_vaed.checkpoint import DEFAULT_STUDENT
    from turbo_vaed.decoders.store import load_decoder
    from turbo_vaed.decoders.student import state_layout

    dec = load_decoder(DEFAULT_STUDENT)
    shape = dec.input_shape(1, 720, 1280)
    layouts = {}
    for ps in (False, True):
        step = dec.arch.stream_step(dec.module, LoweringOptions(stream_partial_sums=ps), 1, shape[2], shape[3])
        layouts[ps] = state_layout(step.module, 1, shape[2], shape[3])
        assert any("partial sums" in n for n in step.notes) == ps
    changed = [(a, b) for a, b in zip(layouts[False], layouts[True], strict=True) if a != b]
    assert changed == [(("state16", (2, 24, 720, 1280)), ("state16", (2, 3, 720, 1280)))]


def test_bands_are_refused_where_they_cannot_apply(tmp_path):
    from turbo_vaed.decoders.store import random_decoder

    student = small_student("wan")
    with pytest.raises(UserError, match="--stream"):
        export_artifact(student, "onnx", "32x32", latent_frames=2, out_dir=tmp_path, bands=2)
    with pytest.raises(UserError, match="at most"):
        stream_decoder(as_decoder(student), latents_for("wan", t=2, h=1, w=2), 1, 64).__next__()
    import json
    from pathlib import Path

    cfg = json.loads((Path(__file__).resolve().parents[1] / "models" / "taehv" / "taew2_1.json").read_text())
    taehv = random_decoder("taehv", cfg)
    with pytest.raises(UserError, match="no bands of rows"):  # TAEHV splits its tail frame by frame, not in rows
        stream_decoder(taehv, latents_for("wan", t=2, h=2, w=2), 1, 2).__next__()
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_bands_needs_stream(cli, tmp_path):
    from turbo_vaed.checkpoint import save_student
    from turbo_vaed.latents_io import save_latents

    ck = save_student(small_student("wan"), tmp_path / "s.safetensors")
    lat = save_latents(tmp_path / "z.safetensors", latents_for("wan", t=3, h=4, w=4), "wan")
    res = cli("decode", lat, "-o", tmp_path / "a.mp4", "--checkpoint", ck, "--bands", "2")
    assert res.code == 2 and "error:" in res.err and "--stream" in res.err
    res = cli("decode", lat, "-o", tmp_path / "a.mp4", "--checkpoint", ck, "--stream", "--bands", "2")
    assert res.code == 0, res.err
    assert (tmp_path / "a.mp4").is_file()


def test_onnx_runner_updates_states_in_place(tmp_path):
    """The host runner writes the next states into the state inputs' buffers: same numbers as plain runs (5 bands,
    thinner than the context: a band reads rows of several neighbours' states, the hardest case for the order)."""
    bands = 5
    from turbo_vaed.targets import load_runner

    student = small_student("wan")
    res = export_artifact(student, "onnx", "32x48", latent_frames=1, precision="fp32", out_dir=tmp_path,
                          stream=True, bands=bands)
    runner = load_runner(res.artifact, 1)
    opts = runner.session.get_session_options()  # a banded step: memory before speed (README "Streaming")
    assert not opts.enable_mem_reuse and not opts.enable_mem_pattern and opts.enable_cpu_mem_arena
    spec = res.manifest["stream"]
    z = latents_for("wan", t=4, h=6, w=4, seed=5)[0].transpose(0, 1).contiguous().numpy()
    states = {s["name"]: np.zeros(s["shape"], np.float32) for s in spec["states"]}
    plain = {n: a.copy() for n, a in states.items()}  # run_all overwrites ``states``' buffers
    for c in range(4):
        flags = {n: np.full((1, 1, 1, 1), 1.0 if c == 0 else 0.0, np.float32) for n in ("first", "trim")}
        feeds = {"latents": z[c:c + 1], **flags}
        buffers = [states[s["name"]] for s in spec["states"]]
        outs = runner.run_all({**feeds, **states})
        ref = runner.session.run(None, {**feeds, **plain})
        assert all(o is b for o, b in zip(outs[1:], buffers, strict=True))  # written in place
        for o, r in zip(outs, ref, strict=True):
            assert np.array_equal(o, r), c
        states = {s["name"]: o for s, o in zip(spec["states"], outs[1:], strict=True)}
        plain = {s["name"]: r for s, r in zip(spec["states"], ref[1:], strict=True)}


@pytest.mark.parametrize("target", ["executorch", "coreml"])
def test_banded_step_on_the_phone_targets(tmp_path, target):
    """The banded step (states held band by band) converts and runs exactly on ExecuTorch (one XNNPACK
    partition) and Core ML (its ML program evaluated here)."""
    from turbo_vaed.targets import load_runner

    student = small_student("wan")
    res = export_artifact(student, target, "32x48", latent_frames=1, precision="fp32", out_dir=tmp_path,
                          stream=True, bands=3)
    m = res.manifest
    assert any("_band" in s["name"] for s in m["stream"]["states"])
    if target == "executorch":
        assert m["report"]["partitions"] == 1 and not m["report"].get("non_delegated_ops"), m["report"]
    assert_streams_exactly(load_runner(res.artifact, 2), student, (1, 4), 6, 4, TOL_RUNTIME, target)


@pytest.mark.parametrize("family", student_families())
def test_tail_frames_stream_equals_full_decode(family):
    """``stream_tail_frames``: the tail a few frames at a time (alone or in bands, over one or two stages), its
    states carried from group to group: the frames of the full decode, for chunks of 1-3."""
    student = small_student(family)
    dec = as_decoder(student)
    z = latents_for(family, t=5, h=5, w=3, seed=3)
    ref = full_decode(student, z)
    x = z[0].transpose(0, 1).contiguous().numpy()
    for frames, bands, stages, chunk in ((1, 1, 1, 1), (2, 1, 2, 2), (3, 3, 1, 3), (1, 3, 2, 2), (5, 1, 1, 2),
                                         (7, 1, 1, 2)):
        opts = LoweringOptions(stream_bands=bands, stream_band_stages=stages, stream_tail_frames=frames,
                               stream_state_taps=True, stream_band_order=True)
        step = dec.arch.stream_step(dec.module, opts, chunk, 5, 3)
        spec = stream_spec(step)
        got = np.concatenate(list(run_stream(torch_call(step.module, spec), spec, x, True)))
        err = np.abs(got - ref).max()
        assert got.shape == ref.shape and err <= TOL_TORCH, (family, frames, bands, stages, chunk, err)
        assert any("at a time" in n for n in step.notes)
    # as many frames as the chunk makes: nothing to split, a one-line error
    n = 2 * student.cfg.fam.temporal_factor
    with pytest.raises(UserError, match=f"at most {n - 1}"):
        dec.arch.stream_step(dec.module, LoweringOptions(stream_tail_frames=n), 2, 5, 3)


def test_tail_frames_flag_exports_an_exact_onnx_step(cli, tmp_path):
    """``export --stream --tail-frames 1``: named ``-f1``, recorded in the manifest, exact in ONNX Runtime with the
    states bound in place; the same state layout as the whole step; refused without --stream."""
    from turbo_vaed.checkpoint import save_student
    from turbo_vaed.targets import load_runner

    student = small_student("wan")
    ck = save_student(student, tmp_path / "s.safetensors")
    base = ["export", "--target", "onnx", "--res", "48x64", "--checkpoint", ck, "--latent-frames", "2",
            "--precision", "fp32", "-o", tmp_path / "a"]
    res = cli(*base, "--tail-frames", "1")
    assert res.code == 2 and "error:" in res.err and "--stream" in res.err and not (tmp_path / "a").exists()
    res = cli(*base, "--stream", "--tail-frames", "1", "--band-stages", "2")
    assert res.code == 0, res.err
    art = next((tmp_path / "a").glob("*-stream-s2-f1.onnx"))
    runner = load_runner(art, 1)
    assert runner.manifest["lowering"]["stream_tail_frames"] == 1
    plain = export_artifact(student, "onnx", "48x64", latent_frames=2, precision="fp32", out_dir=tmp_path / "p",
                            stream=True).manifest
    assert runner.manifest["stream"]["states"] == plain["stream"]["states"]
    assert_streams_exactly(runner, student, (1, 5), 8, 6, TOL_RUNTIME)


def test_tail_frames_are_refused_where_they_cannot_apply(tmp_path):
    import json
    from pathlib import Path

    from turbo_vaed.decoders.store import random_decoder
    from turbo_vaed.streaming import banded_options

    models = Path(__file__).resolve().parents[1] / "models"
    flash = random_decoder("flash-vaed", json.loads((models / "flash-vaed" / "wan.json").read_text()))
    with pytest.raises(UserError, match="whole frames only"):
        banded_options(LoweringOptions(), flash, 1, None, 2)
    taehv = random_decoder("taehv", json.loads((models / "taehv" / "taew2_1.json").read_text()))
    assert banded_options(LoweringOptions(), taehv, 1, None, 2).stream_tail_frames == 2  # frame by frame: yes
    for bands, stages in ((3, None), (1, 2)):  # bands of rows: no
        with pytest.raises(UserError, match="no bands of rows"):
            banded_options(LoweringOptions(), taehv, bands, stages, 1)
    with pytest.raises(UserError, match="--stream"):
        export_artifact(small_student("wan"), "onnx", "32x32", latent_frames=2, out_dir=tmp_path, tail_frames=1)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("family", student_families())
def test_partial_sum_states_are_exact_on_and_off(family):
    """Input histories and partial sums give the full decode's frames (PyTorch, fp32), whole, in bands and one
    frame at a time (a group of 1 frame is shorter than the output conv's history: the state is carried over)."""
    student = small_student(family)
    dec = as_decoder(student)
    z = latents_for(family, t=5, h=6, w=4, seed=4)
    ref = full_decode(student, z)
    zz = z[0].transpose(0, 1).contiguous().numpy()
    for ps in (False, True):
        for chunk, bands, tail in ((1, 1, 0), (2, 3, 0), (1, 1, 1), (3, 1, 0)):
            opts = LoweringOptions(stream_bands=bands, stream_tail_frames=tail, stream_partial_sums=ps)
            step = dec.arch.stream_step(dec.module, opts, chunk, 6, 4)
            spec = stream_spec(step)
            got = np.concatenate(list(run_stream(torch_call(step.module, spec), spec, zz, True)))
            assert np.abs(got - ref).max() <= TOL_TORCH, (family, ps, chunk, bands, tail)


@pytest.mark.parametrize("bands,tail", [(1, 0), (3, 0), (1, 1)])
def test_every_state_read_comes_before_its_next_value(tmp_path, bands, tail):
    """What makes in-place binding safe, checked on the exported graph: every node that reads a state input is an
    ancestor of the node that writes its next state (fp32, so the output conv carries partial sums)."""
    import onnx

    res = export_artifact(small_student("wan"), "onnx", "32x48", latent_frames=1, precision="fp32",
                          out_dir=tmp_path, stream=True, bands=bands, tail_frames=tail)
    assert res.manifest["lowering"]["stream_partial_sums"]
    graph = onnx.load(str(res.artifact)).graph
    producer = {o: n for n in graph.node for o in n.output}

    def ancestors(name: str) -> set[int]:
        seen: set[int] = set()
        todo = [name]
        while todo:
            n = producer.get(todo.pop())
            if n is not None and id(n) not in seen:
                seen.add(id(n))
                todo.extend(i for i in n.input if i)
        return seen

    for s in res.manifest["stream"]["states"]:
        before = ancestors(s["next"])
        readers = [n for n in graph.node if s["name"] in n.input]
        assert readers and all(id(n) in before for n in readers), s["name"]
