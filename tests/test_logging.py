"""rlx.logging: the plotting helpers experiments share and the curve reductions, on small arrays."""

import types

import numpy as np
import pytest

from rlx import logging


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_helpers_write_pngs(tmp_path):
    x = np.arange(4) * 10
    y = np.random.default_rng(0).normal(size=(4, 3))
    logging.plot_curves(tmp_path / "one.png", x, {"a": y, "b": y[:, 0]}, "steps", "return", "t",
                        hlines={"random": 0.0}, markers=True)
    panels = {f"game{i}": {"a": (x, y), "b": (x[1:], y[1:])} for i in range(4)}
    logging.plot_panels(tmp_path / "sub" / "grid.png", panels, "steps", "return", band="std",
                        hlines={"game0": {"random policy": -1.0}}, xscale="symlog", linthresh=10)
    logging.plot_bars(tmp_path / "bars.png", {"run": {"x": 0.5, "y": -0.2}, "paper": {"x": 1, "y": 0}},
                      "score")
    for name in ("one.png", "sub/grid.png", "bars.png"):
        assert _is_png(tmp_path / name), name
    with pytest.raises(ValueError, match="bogus"):
        logging.plot_panels(tmp_path / "bad.png", panels, "x", "y", band="bogus")


def test_chunk_episode_means_and_last_episodes_mean():
    sums = np.array([[2.0, 0.0], [4.0, 3.0], [0.0, 6.0], [6.0, 0.0], [1.0, 1.0]])
    counts = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0]])
    # 5 updates in 2 chunks of 2 (the fifth is dropped): (2+4)/(1+2), 3/1; 6/3, 6/2
    np.testing.assert_allclose(logging.chunk_episode_means(sums, counts, 2), [[2.0, 3.0], [2.0, 3.0]])
    np.testing.assert_allclose(logging.chunk_episode_means(sums[:, :1] * 0, counts[:, :1] * 0, 1), [[0.0]])
    np.testing.assert_allclose(logging.last_episodes_mean(sums, counts, n=2), [7.0 / 4.0, 7.0 / 3.0])


def test_cumulative_env_steps():
    result = types.SimpleNamespace(train={"env_steps": np.array([[10.0, 30.0]] * 4)},
                                   eval_steps=[0, 2, 4])
    np.testing.assert_allclose(logging.cumulative_env_steps(result), [0.0, 40.0, 80.0])
