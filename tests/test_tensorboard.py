"""rlx.logging.write_metrics: metrics.csv as write_csv writes it, and the same scalars as
TensorBoard event files under tb/ (read back here without the tensorboard package) and, with
--wandb, as a Weights & Biases run (a stand-in module, and the real one offline if installed)."""

import csv
import glob
import json
import struct
import sys
import types
from pathlib import Path

import pytest

import numpy as np

from rlx import logging


def read_scalars(log_dir) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of every scalar in the event files under `log_dir` (TFRecord
    framing: u64 length, u32 crc, payload, u32 crc; payload: an `Event` proto)."""
    from tensorboardX.proto.event_pb2 import Event

    out = {}
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert files, f"no event files in {log_dir}"
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                assert (v.tag, event.step) not in out, f"duplicate scalar {v.tag} at {event.step}"
                out[(v.tag, event.step)] = v.simple_value
    return out


def csv_scalars(path) -> dict[tuple[str, int], float]:
    """The scalars `scalar_tags` makes of metrics.csv's rows, as read back from the file."""
    out = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            typed = {}
            for k, v in row.items():
                if v == "":
                    continue
                if k == "member":  # a label
                    typed[k] = v
                    continue
                try:
                    typed[k] = int(v) if v.lstrip("-").isdigit() else float(v)
                except ValueError:
                    typed[k] = v
            step, scalars = logging.scalar_tags(typed)
            out.update({(tag, step): value for tag, value in scalars.items()})
    return out


def test_write_metrics_rows(tmp_path):
    rows = [{"kind": "eval", "env_step": 0, "member": "0", "env": "pong", "algo": "pg",
             "eval_return": 1.5},
            {"kind": "train", "update": 1, "env_step": 64, "member": "1", "env": "pong",
             "algo": "soft q", "loss": 0.25, "grad_norm": float("nan")},
            {"method": "es", "env_steps": 10, "eval_return": -3.0}]
    logging.write_metrics(tmp_path / "a", rows)
    logging.write_csv(tmp_path / "plain.csv", rows)
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    got = read_scalars(tmp_path / "a" / "tb")
    assert got[("eval/pong/pg/eval_return/member_0", 0)] == 1.5
    assert got[("train/pong/soft_q/loss/member_1", 64)] == 0.25
    assert got[("train/pong/soft_q/update/member_1", 64)] == 1.0
    assert np.isnan(got[("train/pong/soft_q/grad_norm/member_1", 64)])
    assert got[("es/eval_return", 10)] == -3.0
    assert len(got) == 5
    logging.write_metrics(tmp_path / "a", rows[:1])  # a rewrite replaces the event files
    assert list(read_scalars(tmp_path / "a" / "tb")) == [("eval/pong/pg/eval_return/member_0", 0)]


class FakeWandb(types.ModuleType):
    """Stands in for the `wandb` package: records `init`'s arguments and every `log`."""

    def __init__(self):
        super().__init__("wandb")
        self.runs = []

    def init(self, **kwargs):
        run = types.SimpleNamespace(kwargs=kwargs, logged=[], summary={}, finished=False)
        run.log = lambda data, step: run.logged.append((step, dict(data)))
        run.finish = lambda: setattr(run, "finished", True)
        self.runs.append(run)
        return run


def logged_scalars(run) -> dict[tuple[str, int], float]:
    steps = [step for step, _ in run.logged]
    assert steps == sorted(set(steps)), f"W&B needs increasing steps, got {steps}"
    return {(tag, step): v for step, data in run.logged for tag, v in data.items()}


def test_ppo_quick_run_writes_matching_event_files(tmp_path, monkeypatch):
    from experiments import ppo

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    ppo.main(["--out", str(tmp_path), "--quick", "--no-progress", "--env", "CartPole-v1",
              "--wandb"])
    expected = csv_scalars(tmp_path / "metrics.csv")
    got = read_scalars(tmp_path / "tb")
    assert set(got) == set(expected)
    assert ("train/episode_return/member_0", 256) in got and ("eval/eval_return/member_1", 0) in got
    for key, value in expected.items():  # TensorBoard keeps float32
        np.testing.assert_equal(np.float32(got[key]), np.float32(value), err_msg=str(key))
    (run,) = fake.runs  # the same scalars, through the one logger, to W&B
    assert run.finished and run.kwargs["dir"] == str(tmp_path) and run.kwargs["group"] == "ppo"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert run.kwargs["config"] == summary["config"]
    assert run.summary["final_return"] == summary["final_return"]
    assert run.summary["params_digest"] == summary["params_digest"]
    wb = logged_scalars(run)
    assert set(wb) == set(expected)
    for key, value in expected.items():
        np.testing.assert_equal(wb[key], value, err_msg=str(key))


def test_wandb_flag_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    from experiments import ppo

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(SystemExit) as e:
        ppo.main(["--out", str(tmp_path / "r"), "--quick", "--no-progress", "--wandb"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {logging.WANDB_MISSING}" and "\n" not in err
    assert not (tmp_path / "r").exists()  # refused before anything ran


def wandb_history(run_file) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of the history records of an offline run's `.wandb` file: a
    7-byte header (":W&B", magic, version), then LevelDB-log records (crc u32, length u16,
    type u8: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks, each a `Record` proto."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", {}
    while pos + 7 <= len(data):
        left = block - pos % block
        n, kind = struct.unpack("<HB", data[pos + 4:pos + 7]) if left >= 7 else (0, 0)
        if left < 7 or (n == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = pb.Record.FromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:
                    tag = item.key or "/".join(item.nested_key)
                    if not tag.startswith("_"):
                        out[(tag, record.history.step.num)] = float(json.loads(item.value_json))
    return out


def test_real_wandb_offline_run_holds_the_scalars(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # optional extra: pip install 'rlx[wandb]'
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network
    monkeypatch.setenv("WANDB_SILENT", "true")
    rows = [{"kind": "eval", "env_step": 0, "member": "0", "eval_return": 1.5},
            {"kind": "train", "update": 1, "env_step": 64, "member": "0", "loss": 0.25},
            {"kind": "eval", "env_step": 64, "member": "0", "eval_return": -2.0},
            {"kind": "train", "update": 2, "env_step": 128, "member": "0", "loss": 0.125}]
    logging.write_json(tmp_path / "summary.json", {"experiment": "t", "final_return": -2.0})
    logging.write_metrics(tmp_path, rows, wandb=True)
    (run_file,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    got = wandb_history(Path(run_file))
    assert got == {(tag, step): value for step, tag, value in logging.scalar_events(rows)}
