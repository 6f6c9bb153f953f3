"""Class 8: latent caches, resume and signals: a corrupt or mismatched cache, an interrupted build, a changed or
truncated resume, a kill between the two renames of a save, SIGTERM, and log rows after resume."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from tests.test_hardening_common import clean, tiny, tree, work

FIXTURES = (clean, tiny, work)  # shared fixtures of the hardening suite (test_hardening_common.py)


def _distill_args(t, out, *extra):
    return ["distill", "--teacher", str(t["teacher"]), "--videos", str(t["video"]), "--crop", "32",
            "--latent-frames", "2", "--batch", "1", "--threads", "1", "--log-every", "1", "--save-every", "1",
            "--steps", "3", "-o", str(out), *extra]


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A run stopped (and saved) at step 1 of 3."""
    from turbo_vaed.cli import run

    out = tmp_path_factory.mktemp("state") / "run"
    assert run(_distill_args(tiny, out, "--stop-at", "1")) == 0
    assert (out / "checkpoint" / "state.json").is_file()
    return out


@pytest.fixture
def run_copy(trained, work):
    dst = work / "run"
    shutil.copytree(trained, dst)
    return dst


def _log_steps(run) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- resume


def test_checkpoint_holds_no_pickles(trained):
    files = sorted(p.name for p in (trained / "checkpoint").iterdir())
    assert files == ["model.safetensors", "state.json", "training.safetensors"]


@pytest.mark.parametrize("extra, needle", [(("--lr", "0.01"), "lr"), (("--batch", "2"), "batch"),
                                           (("--crop", "64"), "res"), (("--seed", "3"), "seed")])
def test_resume_with_changed_settings(clean, tiny, run_copy, extra, needle):
    clean(*_distill_args(tiny, run_copy, "--resume", *extra), needles=("changed settings", needle))


@pytest.mark.parametrize("what", ["model.safetensors", "training.safetensors", "state.json"])
def test_resume_truncated_checkpoint(clean, tiny, run_copy, what):
    f = run_copy / "checkpoint" / what
    f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 3)])
    clean(*_distill_args(tiny, run_copy, "--resume"), needles=("checkpoint" if what != "state.json" else "resum",))


def test_resume_without_checkpoint(clean, tiny, work):
    (work / "run").mkdir()
    clean(*_distill_args(tiny, work / "run", "--resume"), needles=("no resumable checkpoint",))


def test_fresh_run_into_an_existing_run(clean, tiny, run_copy):
    clean(*_distill_args(tiny, run_copy), needles=("--resume",))


def test_old_checkpoint_recovered_and_log_not_repeated(cli, tiny, run_copy):
    """Killed between the renames of a save: only checkpoint.old is left; a row was logged after the save."""
    (run_copy / "checkpoint").rename(run_copy / "checkpoint.old")
    with (run_copy / "log.jsonl").open("a") as f:
        f.write(json.dumps({"step": 2, "total": 1.0}) + "\n" + '{"step": 3, "tot')  # and a torn line
    res = cli(*_distill_args(tiny, run_copy, "--resume"))
    assert res.code == 0, res.err
    assert "recovered" in res.out and "checkpoint.old" in res.out
    assert _log_steps(run_copy) == [1, 2, 3]
    assert sorted(p.name for p in run_copy.iterdir()) == ["checkpoint", "distill.json", "log.jsonl",
                                                          "student.safetensors"]


def test_finished_tmp_save_is_recovered(cli, tiny, run_copy):
    """Killed after checkpoint -> checkpoint.old, before checkpoint.tmp -> checkpoint: the newer save wins."""
    ck = run_copy / "checkpoint"
    shutil.copytree(ck, run_copy / "checkpoint.tmp")
    ck.rename(run_copy / "checkpoint.old")
    res = cli(*_distill_args(tiny, run_copy, "--resume", "--stop-at", "2"))
    assert res.code == 0, res.err
    assert "checkpoint.tmp" in res.out and "resuming at step 1" in " ".join(res.out.split())
    assert json.loads((run_copy / "checkpoint" / "state.json").read_text())["step"] == 2
    assert not (run_copy / "checkpoint.tmp").exists() and not (run_copy / "checkpoint.old").exists()


def test_sigterm_saves_and_exits(cli, tiny, work, monkeypatch):
    """SIGTERM is handled like SIGINT: the step finishes, the state is saved, the command exits (143)."""
    from turbo_vaed.distill.trainer import Distiller

    real = Distiller._batch
    sent = []

    def batch_then_term(self):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(Distiller, "_batch", batch_then_term)
    run = work / "run"
    res = cli(*_distill_args(tiny, run, "--save-every", "100"))
    assert res.code == 143, (res.code, res.err)
    assert "interrupted (SIGTERM; saved) at step 1" in " ".join(res.out.split())
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 1
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) or callable(signal.getsignal(signal.SIGTERM))


# ---------------------------------------------------------------- latent caches


@pytest.fixture(scope="module")
def cache(tiny, tmp_path_factory):
    from turbo_vaed.cli import run

    out = tmp_path_factory.mktemp("cache") / "cache"
    assert run(["cache-latents", "--videos", str(tiny["video"]), "--teacher", str(tiny["teacher"]), "-o", str(out),
                "--clips", "2", "--crop", "32", "--latent-frames", "2"]) == 0
    return out


@pytest.fixture
def cache_copy(cache, work):
    dst = work / "cache"
    shutil.copytree(cache, dst)
    return dst


def _train_on(t, cache_dir, *extra):
    return ["distill", "--teacher", str(t["teacher"]), "--latent-cache", str(cache_dir), "--crop", "32",
            "--latent-frames", "2", "--steps", "1", "-o", "run", *extra]


def _break_index(c):
    (c / "index.json").write_text('{"format": "turbovaed.latent_cache/1", "fam')


def _zero_clips(c):
    idx = json.loads((c / "index.json").read_text())
    (c / "index.json").write_text(json.dumps({**idx, "clips": 0}))


def _more_clips(c):
    idx = json.loads((c / "index.json").read_text())
    (c / "index.json").write_text(json.dumps({**idx, "clips": 5}))


def _drop_shard(c):
    (c / "shard_0000.safetensors").unlink()


def _cut_shard(c):
    f = c / "shard_0000.safetensors"
    f.write_bytes(f.read_bytes()[:200])


@pytest.mark.parametrize("breaker, needle", [(_break_index, "index"), (_zero_clips, "clips"), (_more_clips, "clips"),
                                             (_drop_shard, "lacks shard_0000"), (_cut_shard, "shard")],
                         ids=["corrupt-index", "zero-clips", "count-mismatch", "missing-shard", "truncated-shard"])
def test_broken_cache(clean, tiny, cache_copy, breaker, needle):
    breaker(cache_copy)
    clean(*_train_on(tiny, cache_copy), needles=(needle,))


def test_cache_of_another_crop(clean, tiny, cache_copy):
    clean(*_train_on(tiny, cache_copy, "--crop", "64"), needles=("--crop",))


def test_cache_trains(cli, tiny, cache_copy, work):
    res = cli(*_train_on(tiny, cache_copy))
    assert res.code == 0, res.err


def test_interrupted_build_leaves_nothing(cli, tiny, work, monkeypatch):
    import turbo_vaed.teachers as teachers

    real, calls = teachers.teacher_encode, []

    def encode_then_ctrl_c(vae, x):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the terminal sends it
        return real(vae, x)

    monkeypatch.setattr(teachers, "teacher_encode", encode_then_ctrl_c)
    before = tree(work)
    res = cli("cache-latents", "--videos", tiny["video"], "--teacher", tiny["teacher"], "-o", "cache", "--clips",
              "3", "--crop", "32", "--latent-frames", "2")
    assert res.code == 130 and res.err.strip() == "interrupted", (res.code, res.err)
    assert tree(work) == before


def test_stale_cache_temp_is_removed(cli, tiny, work):
    stale = work / ".cache.tmp999999999"
    stale.mkdir()
    (stale / "shard_0000.safetensors").write_bytes(b"half")
    res = cli("cache-latents", "--videos", tiny["video"], "--teacher", tiny["teacher"], "-o", "cache", "--clips",
              "1", "--crop", "32", "--latent-frames", "2")
    assert res.code == 0, res.err
    assert sorted(p.name for p in work.iterdir()) == ["cache"]
