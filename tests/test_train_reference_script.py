"""scripts/train_reference_teacher.py: a run started with ``--init DIR`` continues DIR's training record.

The reference teacher was fine-tuned from a shipped folder; its training.json must then hold the whole history
(steps, wall time, log, slices) without a hand merge, and the LR schedule must start at the slice's first step.
The clips are replaced by small synthetic ones so the run takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    path = ROOT / "scripts" / "train_reference_teacher.py"
    spec = importlib.util.spec_from_file_location("train_reference_teacher", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(script, monkeypatch, argv: list[str]) -> None:
    g = torch.Generator().manual_seed(0)
    clips = {"a": torch.randint(0, 256, (24, 3, 32, 32), generator=g, dtype=torch.uint8),
             "b": torch.randint(0, 256, (24, 3, 32, 32), generator=g, dtype=torch.uint8)}
    monkeypatch.setattr(script, "load_clips", lambda *a: (clips, clips["a"][:5]))
    monkeypatch.setattr(sys, "argv", ["train_reference_teacher.py", *argv])
    script.main()


def _init_folder(script, path: Path) -> dict:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    AutoencoderKLWan(**script.CONFIG).save_pretrained(str(path), safe_serialization=True)
    record = dict(steps=7, wall_seconds=12.5, log=[dict(step=5, t=10.0, psnr=11.0)],
                  history=[dict(from_step=0, steps=7, lr=1e-3, chroma=2.0, colour_gain=3.0, threads=1)])
    (path / "training.json").write_text(json.dumps(record))
    return record


def test_lr_schedule_starts_at_the_slice(script):
    args = Namespace(lr=1e-3, warmup=4, steps=10)
    fresh = [script.lr_at(s, args) for s in range(11)]
    args.slice_start = 100
    assert [script.lr_at(100 + s, args) for s in range(11)] == pytest.approx(fresh)
    assert script.lr_at(110, args) == pytest.approx(0.05e-3)


def test_init_record_reads_top_level_or_args_history(script, tmp_path):
    assert script.init_record(None) is None
    assert script.init_record(str(tmp_path)) is None  # a folder without training.json: a fresh record
    (tmp_path / "training.json").write_text(json.dumps(
        dict(steps=3, wall_seconds=4.0, log=[], args=dict(history=[dict(from_step=0, steps=3)]))))
    rec = script.init_record(str(tmp_path))
    assert rec == dict(step=3, wall=4.0, log=[], history=[dict(from_step=0, steps=3)])


def test_init_run_continues_the_record_across_a_stop_and_resume(script, tmp_path, monkeypatch):
    init = tmp_path / "init"
    prior = _init_folder(script, init)
    common = ["--init", str(init), "--logvar-init", "stock", "--steps", "2", "--batch", "1", "--size", "16",
              "--frames", "5", "--warmup", "1", "--colour-gain", "3", "--val-every", "1000",
              "--run", str(tmp_path / "run"), "--out", str(tmp_path / "out")]
    _run(script, monkeypatch, [*common, "--stop-after", "0"])  # stops before its first step, state saved
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["step"] == 7 and state["slice_start"] == 7
    assert not (tmp_path / "out").exists()
    _run(script, monkeypatch, [*common, "--resume"])
    info = json.loads((tmp_path / "out" / "training.json").read_text())
    assert info["steps"] == 9
    assert info["wall_seconds"] >= prior["wall_seconds"]
    assert info["log"][0] == prior["log"][0]
    # one row per invocation: the prior slice, the --init slice, its resume (same schedule, 7 -> 9, no new restart)
    assert len(info["history"]) == 3 and info["history"][0] == prior["history"][0]
    for row in info["history"][1:]:
        assert row["from_step"] == 7 and row["steps"] == 9
    assert "(step 7)" in info["history"][1]["init"] and "init" not in info["history"][2]
    assert "_name_or_path" not in json.loads((tmp_path / "out" / "config.json").read_text())
