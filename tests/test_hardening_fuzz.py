"""Property-based tests of every file loader on random bytes and on mutated valid files: the loader returns, or
raises turbovaed's own :class:`UserError` (one line) - never another exception, never a hang.

Loaders: latents (.safetensors, .pt), decoder checkpoints (file and imported folder), released weights
(``import``), manifests, results JSON, latent caches (index and shards), videos, the distill training state.
Examples are derandomized (the same on every run) and few, so the suite stays fast; set
``TURBOVAED_FUZZ_EXAMPLES`` to try more.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import latents_for
from tests.test_hardening_common import fake_manifest, results_doc, tiny
from turbo_vaed.errors import UserError

FIXTURES = (results_doc, tiny)  # shared fixtures of the hardening suite (test_hardening_common.py)

FUZZ = settings(max_examples=int(os.environ.get("TURBOVAED_FUZZ_EXAMPLES", "25")), deadline=None, derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RANDOM = st.binary(min_size=0, max_size=3000)
# a mutation: up to 8 (position, xor) byte flips, then maybe a cut at a fraction of the length
MUTATION = st.tuples(st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), max_size=8),
                     st.one_of(st.none(), st.floats(0.0, 1.0)))


def mutate(data: bytes, mutation, head: int | None = None) -> bytes:
    """Flip bytes (within the first ``head`` bytes if given: where headers live) and maybe truncate."""
    flips, cut = mutation
    d = bytearray(data)
    if d:
        span = min(len(d), head) if head else len(d)
        for pos, x in flips:
            d[pos % span] ^= x
    if cut is not None:
        d = d[: int(len(d) * cut)]
    return bytes(d)


def only_user_errors(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except UserError as e:
        assert "\n" not in str(e)


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="turbovaed-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------- latents


@pytest.fixture(scope="module")
def valid_latents(scratch):
    from turbo_vaed.latents_io import save_latents

    st_file = save_latents(scratch / "valid.safetensors", latents_for("wan", 2, 4, 4), "wan").read_bytes()
    torch.save({"latents": latents_for("wan", 2, 4, 4)}, str(scratch / "valid.pt"))
    return {".safetensors": st_file, ".pt": (scratch / "valid.pt").read_bytes()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@FUZZ
@given(data=RANDOM)
def test_latents_random_bytes(scratch, suffix, data):
    from turbo_vaed.latents_io import load_latents

    only_user_errors(load_latents, _write(scratch / f"r{suffix}", data))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@FUZZ
@given(m=MUTATION)
def test_latents_mutated(scratch, valid_latents, suffix, m):
    from turbo_vaed.latents_io import load_latents

    p = _write(scratch / f"m{suffix}", mutate(valid_latents[suffix], m, head=400))
    only_user_errors(load_latents, p)
    only_user_errors(load_latents, p, "ntchw")


# ---------------------------------------------------------------------------------------------- decoders


@FUZZ
@given(data=RANDOM)
def test_checkpoint_random_bytes(scratch, data):
    from turbo_vaed.decoders.store import load_decoder

    only_user_errors(load_decoder, _write(scratch / "r.safetensors", data))


@FUZZ
@given(m=MUTATION)
def test_checkpoint_mutated(scratch, tiny, m):
    from turbo_vaed.decoders.store import load_decoder

    p = _write(scratch / "m.safetensors", mutate(tiny["ckpt"].read_bytes(), m, head=2000))
    only_user_errors(load_decoder, p, "wan")


@FUZZ
@given(m=MUTATION)
def test_imported_folder_mutated_json(scratch, tiny, m):
    """A decoder folder (``turbovaed import``): decoder.json mutated, the weights intact."""
    from turbo_vaed.decoders import as_decoder
    from turbo_vaed.decoders.store import FOLDER_CONFIG, FOLDER_WEIGHTS, FORMAT, load_decoder

    folder = scratch / "dec"
    folder.mkdir(exist_ok=True)
    shutil.copy(tiny["ckpt"], folder / FOLDER_WEIGHTS)
    dec = as_decoder(tiny["student"])
    text = json.dumps({"format": FORMAT, "arch": dec.arch.name, "config": dec.config_dict(), "provenance": {}})
    _write(folder / FOLDER_CONFIG, mutate(text.encode(), m))
    only_user_errors(load_decoder, folder)


@FUZZ
@given(data=RANDOM, suffix=st.sampled_from([".pth", ".safetensors"]))
def test_released_weights_random_bytes(scratch, data, suffix):
    from turbo_vaed.decoders.base import read_weights_file

    only_user_errors(read_weights_file, _write(scratch / f"w{suffix}", data))


# ---------------------------------------------------------------------------------------------- JSON documents


@FUZZ
@given(data=RANDOM)
def test_manifest_random_bytes(scratch, data):
    from turbo_vaed.exporters.manifest import read_manifest

    only_user_errors(read_manifest, _write(scratch / "r.manifest.json", data))


@FUZZ
@given(m=MUTATION)
def test_manifest_mutated(scratch, tiny, m):
    from turbo_vaed.exporters.manifest import read_manifest
    from turbo_vaed.guards import manifest_shapes

    art = scratch / "a.onnx"
    text = fake_manifest(art, tiny["student"], "onnx").read_bytes()
    p = _write(scratch / "a.manifest.json", mutate(text, m))

    def read_and_use():
        doc = read_manifest(p)
        manifest_shapes(doc, str(p))

    only_user_errors(read_and_use)


@FUZZ
@given(data=RANDOM)
def test_results_random_bytes(scratch, data):
    from turbo_vaed.bench.schema import load_results

    only_user_errors(load_results, _write(scratch / "r.json", data))


@FUZZ
@given(m=MUTATION)
def test_results_mutated(scratch, results_doc, m):
    from turbo_vaed.bench.report import print_results
    from turbo_vaed.bench.schema import load_results

    p = _write(scratch / "m.json", mutate(json.dumps(results_doc).encode(), m))

    def load_and_print():
        import io

        from rich.console import Console

        print_results(load_results(p), title="fuzz", console=Console(file=io.StringIO()))

    only_user_errors(load_and_print)


# ---------------------------------------------------------------------------------------------- latent caches


@pytest.fixture(scope="module")
def valid_cache(scratch, tiny):
    from turbo_vaed.data import ClipSampler
    from turbo_vaed.distill.latent_cache import build_cache
    from turbo_vaed.teachers import load_teacher

    sampler = ClipSampler([tiny["video"]], 5, 32, seed=0)
    return build_cache(sampler, load_teacher("wan", str(tiny["teacher"])), "wan", scratch / "cache", 2)


def _cache_copy(scratch, valid_cache) -> Path:
    c = scratch / "cache_m"
    shutil.rmtree(c, ignore_errors=True)
    shutil.copytree(valid_cache, c)
    return c


@FUZZ
@given(m=MUTATION, which=st.sampled_from(["index.json", "shard_0000.safetensors"]))
def test_latent_cache_mutated(scratch, valid_cache, m, which):
    from turbo_vaed.distill.latent_cache import CachedClips

    c = _cache_copy(scratch, valid_cache)
    f = c / which
    _write(f, mutate(f.read_bytes(), m, head=600 if which.endswith("safetensors") else None))
    only_user_errors(CachedClips, c, "wan", clip_shape=(3, 5, 32, 32))


@FUZZ
@given(data=RANDOM, which=st.sampled_from(["index.json", "shard_0000.safetensors"]))
def test_latent_cache_random_bytes(scratch, valid_cache, data, which):
    from turbo_vaed.distill.latent_cache import CachedClips

    c = _cache_copy(scratch, valid_cache)
    _write(c / which, data)
    only_user_errors(CachedClips, c, "wan")


# ---------------------------------------------------------------------------------------------- videos


@FUZZ
@given(data=RANDOM)
def test_video_random_bytes(scratch, data):
    from turbo_vaed.video_io import read_video

    only_user_errors(read_video, _write(scratch / "r.mp4", data), max_frames=9)


@FUZZ
@given(m=MUTATION)
def test_video_mutated(scratch, tiny, m):
    from turbo_vaed.video_io import probe_video, read_video

    p = _write(scratch / "m.mp4", mutate(tiny["video"].read_bytes(), m))
    only_user_errors(probe_video, p)
    only_user_errors(read_video, p, max_frames=9)


# ---------------------------------------------------------------------------------------------- training state


@pytest.fixture(scope="module")
def valid_state(scratch):
    from turbo_vaed.distill.state import capture_rng, flatten_state_dict, write_checkpoint

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors: dict = {}
    doc = {"step": 1, "config": {"lr": 1e-3}, "optimizers": {"opt": flatten_state_dict(opt.state_dict(), "opt",
                                                                                        tensors)},
           "data_rng": flatten_state_dict(__import__("random").Random(0).getstate(), "data", tensors),
           "rng": capture_rng(tensors)}
    write_checkpoint(scratch / "ck", net.state_dict(), tensors, doc)
    return scratch / "ck"


@FUZZ
@given(m=MUTATION, which=st.sampled_from(["state.json", "training.safetensors", "model.safetensors"]))
def test_training_state_mutated(scratch, valid_state, m, which):
    from turbo_vaed.distill.state import read_checkpoint, restore_rng, unflatten_state_dict

    ck = scratch / "ck_m"
    shutil.rmtree(ck, ignore_errors=True)
    shutil.copytree(valid_state, ck)
    f = ck / which
    _write(f, mutate(f.read_bytes(), m, head=None if which == "state.json" else 800))
    state = torch.get_rng_state()

    def load():
        model, tensors, doc = read_checkpoint(ck)
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        try:
            net.load_state_dict(model)
            opt.load_state_dict(unflatten_state_dict(doc["optimizers"]["opt"], tensors, "ck"))
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:  # the trainer's own catch
            raise UserError(f"does not fit ({type(e).__name__})") from None
        unflatten_state_dict(doc["data_rng"], tensors, "ck")
        restore_rng(doc.get("rng"), tensors, "ck")

    try:
        only_user_errors(load)
    finally:
        torch.set_rng_state(state)


# ---------------------------------------------------------------------------------------------- hostile JSON


DEEP = "[" * 100000 + "]" * 100000


def test_deeply_nested_json_everywhere(scratch, tiny):
    """Nesting that overflows Python's recursion, in each JSON a loader reads."""
    from safetensors.torch import load_file, save_file

    from turbo_vaed.bench.schema import load_results
    from turbo_vaed.decoders.store import FOLDER_CONFIG, FOLDER_WEIGHTS, load_decoder
    from turbo_vaed.distill.latent_cache import CachedClips
    from turbo_vaed.exporters.manifest import read_manifest

    with pytest.raises(UserError):
        read_manifest(_write(scratch / "d.manifest.json", DEEP.encode()))
    with pytest.raises(UserError):
        load_results(_write(scratch / "d.json", DEEP.encode()))
    folder = scratch / "deep_dec"
    folder.mkdir(exist_ok=True)
    shutil.copy(tiny["ckpt"], folder / FOLDER_WEIGHTS)
    _write(folder / FOLDER_CONFIG, DEEP.encode())
    with pytest.raises(UserError):
        load_decoder(folder)
    ck = scratch / "deep.safetensors"
    save_file(load_file(str(tiny["ckpt"])), str(ck), metadata={"format": "turbovaed.decoder/1", "arch": "student",
                                                              "config": DEEP})
    with pytest.raises(UserError):
        load_decoder(ck)
    cache = scratch / "deep_cache"
    cache.mkdir(exist_ok=True)
    _write(cache / "index.json", DEEP.encode())
    with pytest.raises(UserError):
        CachedClips(cache, "wan")


def test_manifest_with_nan_is_refused(scratch, tiny):
    from turbo_vaed.exporters.manifest import read_manifest

    art = scratch / "n.onnx"
    mp = fake_manifest(art, tiny["student"], "onnx")
    mp.write_text(mp.read_text().replace('"size_bytes": 1', '"size_bytes": NaN'))
    with pytest.raises(UserError, match="NaN"):
        read_manifest(art)
