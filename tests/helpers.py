"""Shared pieces of the tests: an on-disk compilation cache and the kill-and-resume check."""

from __future__ import annotations

import jax
import pytest

from rlx import runner

_CACHE_FLAGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="module")
def disk_compile_cache(tmp_path_factory):
    """Speed only: a module whose runs compile the same programs caches them on disk (takes
    effect when the module compiles first in the session). Use with
    `pytestmark = pytest.mark.usefixtures("disk_compile_cache")` after importing it."""
    old = {n: getattr(jax.config, n) for n in _CACHE_FLAGS}
    jax.config.update(_CACHE_FLAGS[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(_CACHE_FLAGS[1], 0.0)
    jax.config.update(_CACHE_FLAGS[2], 0)
    yield
    for n, v in old.items():
        jax.config.update(n, v)


def run_killed_and_resumed(trainer, keys, tmp_path):
    """(full, resumed): a whole run, and one stopped after 2 chunks then resumed; asserts the
    resumed run restarted from chunk 2 and ends with the whole run's parameters."""
    full = runner.run(trainer, keys, tmp_path / "full", progress=False)
    part = runner.run(trainer, keys, tmp_path / "killed", progress=False, stop_after_chunks=2)
    assert part.resumed_from is None
    resumed = runner.run(trainer, keys, tmp_path / "killed", progress=False)
    assert resumed.resumed_from == 2
    assert runner.params_digest(resumed.state.params) == runner.params_digest(full.state.params)
    return full, resumed
