"""rlx.logging.write_metrics: metrics.csv as write_csv writes it, and the same scalars as
TensorBoard event files under tb/ (read back here without the tensorboard package)."""

import csv
import struct

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


def test_ppo_quick_run_writes_matching_event_files(tmp_path):
    from experiments import ppo

    ppo.main(["--out", str(tmp_path), "--quick", "--no-progress", "--env", "CartPole-v1"])
    expected = csv_scalars(tmp_path / "metrics.csv")
    got = read_scalars(tmp_path / "tb")
    assert set(got) == set(expected)
    assert ("train/episode_return/member_0", 256) in got and ("eval/eval_return/member_1", 0) in got
    for key, value in expected.items():  # TensorBoard keeps float32
        np.testing.assert_equal(np.float32(got[key]), np.float32(value), err_msg=str(key))
