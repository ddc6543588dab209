"""rlx.checkpoint: a run's identity, damaged checkpoints, single pytrees.

(A plain resume after a kill ending bit-identical: tests/test_runner.py.)
"""

import dataclasses
import json
import math
import shutil
import types

import jax
import numpy as np
import pytest

from helpers import disk_compile_cache  # noqa: F401  (fixture)
from rlx import checkpoint, runner
from rlx.algos import ppo

CFG = ppo.PPOConfig(env="CartPole-v1", total_steps=4 * 256, num_envs=4, unroll_length=64,
                    num_minibatches=2, update_epochs=2, policy_layers=(16,), value_layers=(16,),
                    num_evals=5, eval_envs=2, normalize_observations=True)
KEYS = jax.random.split(jax.random.PRNGKey(0), 2)


pytestmark = pytest.mark.usefixtures("disk_compile_cache")


def _run(out, trainer=None, keys=KEYS, **kw):
    return runner.run(trainer or ppo.make_train(CFG), keys, out, progress=False, **kw)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """(params digest, eval returns) of the uninterrupted run."""
    res = _run(tmp_path_factory.mktemp("full"))
    return runner.params_digest(res.state.params), res.eval["eval_return"]


@pytest.fixture(scope="module")
def three_chunks(tmp_path_factory):
    """A checkpoint dir killed after 3 of 4 chunks (steps 2 and 3 kept); copy before use."""
    out = tmp_path_factory.mktemp("three")
    _run(out, stop_after_chunks=3)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3", "run.json"]
    return out


def _copy(src, dst):
    shutil.copytree(src / "checkpoints", dst / "checkpoints")
    return dst


def _same_as_full(res, full):
    assert runner.params_digest(res.state.params) == full[0]
    np.testing.assert_array_equal(res.eval["eval_return"], full[1])


def _one_warning(capsys, *parts):
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1, err
    for p in parts:
        assert p in err[0], err[0]


# ---- the run's identity ----------------------------------------------------------------------

def _fake_trainer(config):
    return types.SimpleNamespace(config=config, num_evals=3, updates_per_eval=2, steps_per_update=8)


def test_fingerprint_is_json():
    from rlx.es.trainer import ESConfig

    hp = {"lr": np.array([1e-3, 2e-3], np.float32)}
    fp = checkpoint.fingerprint(_fake_trainer(ESConfig()), KEYS, hp)
    assert json.loads(json.dumps(fp)) == fp  # plain JSON, tuples as lists
    assert fp["config"]["hidden_layers"] == [32, 32]
    assert fp["members"] == 2 and fp["hparams"]["lr"] == np.float32([1e-3, 2e-3]).tolist()
    same = checkpoint.fingerprint(_fake_trainer(ESConfig()), KEYS, hp)
    assert checkpoint.differences(fp, same) == []
    other = checkpoint.fingerprint(_fake_trainer(ESConfig(sigma=0.1)), KEYS[:1], hp)
    assert checkpoint.differences(fp, other)[:2] == ["sigma 0.02 != 0.1", "members 2 != 1"]
    inf = checkpoint.fingerprint(_fake_trainer(dataclasses.replace(CFG, max_grad_norm=math.inf)),
                                 KEYS, hp)
    assert inf["config"]["max_grad_norm"] == "inf"


def test_another_config_in_the_same_out_is_refused(tmp_path, capsys):
    _run(tmp_path, stop_after_chunks=1)
    longer = ppo.make_train(dataclasses.replace(CFG, total_steps=8 * 256))
    with pytest.raises(checkpoint.CheckpointMismatch) as e:
        _run(tmp_path, longer)
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, ValueError)
    assert msg.startswith(f"{tmp_path} holds another run: total_steps 1024 (saved) != 2048 (now)")
    assert msg.endswith(f"use another --out or delete {tmp_path / 'checkpoints'}")
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"members 2 \(saved\) != 3 \(now\)"):
        _run(tmp_path, keys=jax.random.split(jax.random.PRNGKey(0), 3))
    # a checkpoint dir from an older rlx (no run.json) resumes, with one warning, and is stamped
    (tmp_path / "checkpoints" / "run.json").unlink()
    capsys.readouterr()
    assert _run(tmp_path, stop_after_chunks=0).resumed_from == 1
    _one_warning(capsys, "no run.json", "older rlx")
    assert (tmp_path / "checkpoints" / "run.json").exists()


# ---- damaged checkpoints ---------------------------------------------------------------------

def _largest_file(step_dir):
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def _truncate(step_dir):
    f = _largest_file(step_dir)
    f.write_bytes(f.read_bytes()[:50])
    # and a save killed before orbax renamed it: must be ignored (and removed)
    (step_dir.parent / "4.orbax-checkpoint-tmp-123" / "state").mkdir(parents=True)


def _overwrite(step_dir):  # same size, readable: only the state digest can tell
    f = _largest_file(step_dir)
    b = f.read_bytes()
    f.write_bytes(b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1:])


def _delete_metadata(step_dir):
    for p in list(step_dir.rglob("*")):
        if p.is_file() and ("METADATA" in p.name or p.name in ("manifest.ocdbt", "metadata")):
            p.unlink()


@pytest.mark.parametrize("damage", [_truncate, _overwrite, _delete_metadata],
                         ids=["truncated", "overwritten", "metadata-deleted"])
def test_damaged_latest_falls_back_to_the_previous_one(tmp_path, three_chunks, full, capsys,
                                                       damage):
    out = _copy(three_chunks, tmp_path)
    damage(out / "checkpoints" / "3")
    capsys.readouterr()
    res = _run(out)
    assert res.resumed_from == 2
    _one_warning(capsys, "damaged checkpoint", "3 (", "resuming from checkpoint 2")
    _same_as_full(res, full)
    assert not list((out / "checkpoints").glob("*tmp*"))


def test_all_damaged_starts_from_scratch(tmp_path, three_chunks, full, capsys):
    out = _copy(three_chunks, tmp_path)
    for step in ("2", "3"):
        (out / "checkpoints" / step / "history" / "metadata").write_text('{"train": [')
    capsys.readouterr()
    res = _run(out)
    assert res.resumed_from is None
    _one_warning(capsys, "damaged checkpoints", "starting from scratch")
    _same_as_full(res, full)


def test_ppo_experiment_with_another_total_steps_exits_2(tmp_path, capsys):
    from experiments import ppo as ppo_experiment

    argv = ["--out", str(tmp_path), "--env", "CartPole-v1", "--quick", "--seeds", "1",
            "--no-progress"]
    ppo_experiment.main(argv + ["--total-steps", "256"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        ppo_experiment.main(argv + ["--total-steps", "512"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path} holds another run: total_steps")


# ---- single pytrees (EPG's learned loss) -------------------------------------------------------

def test_pytree_round_trip_and_damage(tmp_path):
    tree = {"w": np.arange(600, dtype=np.float32).reshape(20, 30), "b": np.ones(3, np.int32)}
    checkpoint.save_pytree(tmp_path / "t", tree)
    back = checkpoint.restore_pytree(tmp_path / "t", tree)
    jax.tree.map(np.testing.assert_array_equal, back, tree)
    with pytest.raises(ValueError, match="nothere"):
        checkpoint.restore_pytree(tmp_path / "nothere", tree)
    with pytest.raises(ValueError, match=f"{tmp_path / 't'} is damaged"):
        checkpoint.restore_pytree(tmp_path / "t", {"w": tree["w"]})  # another structure
    f = max((p for p in (tmp_path / "t").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    b = f.read_bytes()
    f.write_bytes(b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1:])
    with pytest.raises(ValueError, match=f"{tmp_path / 't'} is damaged"):
        checkpoint.restore_pytree(tmp_path / "t", tree)


def test_load_loss_names_a_missing_or_damaged_dir(tmp_path):
    from rlx.epg import EPGConfig, Inner, load_loss, save_loss

    with pytest.raises(ValueError, match=f"{tmp_path / 'nope'} holds no saved loss"):
        load_loss(tmp_path / "nope")
    config = EPGConfig()
    save_loss(tmp_path / "loss", Inner(config).init_loss_params(jax.random.PRNGKey(0)), config)
    (tmp_path / "loss" / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json is damaged"):
        load_loss(tmp_path / "loss")
    save_loss(tmp_path / "loss", Inner(config).init_loss_params(jax.random.PRNGKey(0)), config)
    shutil.rmtree(tmp_path / "loss" / "loss_params" / "d", ignore_errors=True)
    for p in (tmp_path / "loss" / "loss_params").rglob("manifest.ocdbt"):
        p.unlink()
    with pytest.raises(ValueError, match=f"{tmp_path / 'loss' / 'loss_params'} is damaged"):
        load_loss(tmp_path / "loss")
