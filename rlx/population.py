"""The population axis: seeds, hyper-parameter sweeps, ES members and EPG tasks.

A population is a pytree whose leaves share a leading axis. On one device it is
`vmap`ped; over several it is laid out with `NamedSharding(mesh, P(axis))` and
`jit` partitions the vmapped program (XLA turns reductions over members into one
all-reduce). Nothing here knows what a member is.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "pop"


def configure_cpu_devices(count: int | None = None) -> None:
    """Expose one XLA host device per CPU core (call before JAX starts its backend).

    On CPU one XLA device uses about one core, so entry points call this to use
    every core through the device mesh. An `--xla_force_host_platform_device_count`
    already in `XLA_FLAGS` (set by the user) wins; `RLX_CPU_DEVICES` overrides the
    count. Has no effect on GPU/TPU backends.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    if count is None:
        count = int(os.environ.get("RLX_CPU_DEVICES", os.cpu_count() or 1))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def configure_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (a rerun with the same shapes loads its
    programs instead of compiling them); returns the cache directory, or None when off.

    `path`, else `RLX_COMPILATION_CACHE`: unset, "" or "1" for the user cache directory
    (`$XDG_CACHE_HOME/rlx/jax`, default `~/.cache/rlx/jax`), "0" (or off/false/no) for no
    cache, anything else for that directory. A cache directory already configured for JAX
    (`JAX_COMPILATION_CACHE_DIR`) wins. Programs that compile in under 0.2 s are not kept
    (`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` sets another threshold).
    """
    setting = str(path) if path is not None else os.environ.get("RLX_COMPILATION_CACHE", "")
    if setting.strip().lower() in ("0", "off", "false", "no"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    if setting.strip() in ("", "1"):
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        setting = os.path.join(base, "rlx", "jax")
    setting = os.path.abspath(os.path.expanduser(setting))
    jax.config.update("jax_compilation_cache_dir", setting)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return setting


def host_device_count_flag() -> int | None:
    m = re.search(r"xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return int(m.group(1)) if m else None


def make_mesh(num_devices: int | None = None, axis: str = AXIS,
              devices: list | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (all, across hosts, by default)."""
    devices = list(jax.devices() if devices is None else devices)
    if num_devices is not None:
        if num_devices < 1:
            raise ValueError(f"the device count must be >= 1, got {num_devices}")
        if num_devices > len(devices):
            raise ValueError(f"asked for {num_devices} devices but only {len(devices)} exist "
                             f"({jax.default_backend()}); on CPU set XLA_FLAGS="
                             f"--xla_force_host_platform_device_count={num_devices}")
        devices = devices[:num_devices]
    return Mesh(np.array(devices), (axis,))


def check_divisible(size: int, mesh: Mesh, what: str = "population") -> None:
    """Raise `ValueError` unless `size` splits evenly over the mesh's devices."""
    n = mesh.devices.size
    if size % n:
        raise ValueError(f"{what} size {size} is not divisible by the {n} devices of the mesh; "
                         f"use a multiple of {n} or fewer devices")


def local_size(size: int, mesh: Mesh | None) -> int:
    """Members per device when `size` members are sharded over the mesh (checked divisible;
    None: one device)."""
    if mesh is None:
        return size
    check_divisible(size, mesh)
    return size // mesh.devices.size


def check_even(size: int, what: str = "population size") -> None:
    """Raise `ValueError` unless `size` is even (members that come in mirrored pairs)."""
    if size % 2:
        raise ValueError(f"{what} must be even (mirrored pairs), got {size}")


def member_index(local_size: int, mesh: Mesh | None, axis: str = AXIS) -> jax.Array:
    """Global indices [local_size] of the members this device holds (inside `shard_map`
    over `mesh` with members sharded as P(axis); with no mesh: 0 .. local_size - 1)."""
    first = jax.lax.axis_index(axis) * local_size if mesh is not None else 0
    return first + jax.numpy.arange(local_size)


def sharding(mesh: Mesh, axis: str | None = AXIS) -> NamedSharding:
    return NamedSharding(mesh, P(axis))


def shard(tree: Any, mesh: Mesh, axis: str = AXIS) -> Any:
    """Place every leaf's leading (population) axis over the mesh; replicate scalars."""
    def place(x):
        x = jax.numpy.asarray(x) if not isinstance(x, jax.Array) else x
        spec = P(axis) if x.ndim >= 1 else P()
        s = NamedSharding(mesh, spec)
        if not s.is_fully_addressable and not (isinstance(x, jax.Array) and x.sharding == s):
            # multi-process mesh: every process passes the same global value
            host = np.asarray(jax.device_get(x))
            return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])
        return jax.device_put(x, s)

    return jax.tree.map(place, tree)


def size(tree: Any) -> int:
    """The population size: the common leading dimension of the leaves."""
    sizes = {np.shape(x)[0] for x in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"population leaves disagree on their leading size: {sorted(sizes)}")
    return sizes.pop()


def pmap_population(fn: Callable, mesh: Mesh | None = None, axis: str = AXIS,
                    donate: bool = False, axis_name: str | None = None) -> Callable:
    """`jit(vmap(fn))` whose inputs and outputs are sharded over `mesh` on their leading axis.

    Each device computes its own members; only what `fn`'s outputs need crosses
    devices. Inputs must be placed with `shard` (or are placed on call). With no
    mesh this is plain `jit(vmap(fn))`. With `axis=None` the members are
    replicated on every device of the mesh (for an `fn` that shards its own work).
    `axis_name` names the vmapped member axis for collectives inside `fn`
    (`lax.pmean(x, axis_name)` then averages over all members, across devices).
    """
    vfn = jax.vmap(fn, axis_name=axis_name)
    if mesh is None:
        return jax.jit(vfn, donate_argnums=0 if donate else ())
    s = sharding(mesh, axis)
    jitted = jax.jit(vfn, out_shardings=s, donate_argnums=0 if donate else ())

    # traced under the mesh, so that values made inside the program carry the same mesh in
    # their types as the inputs: jitted functions inside (an env's step) then trace once for
    # every program instead of once per program
    def call(*args):
        if axis is not None:
            check_divisible(size(args), mesh)
        with jax.set_mesh(mesh):
            return jitted(*shard(args, mesh, axis))

    def lower(*args):
        """Lower for arguments (arrays or `jax.ShapeDtypeStruct`s) placed as `call` places them."""
        with jax.set_mesh(mesh):
            return jitted.lower(*abstract(args, mesh, axis))

    call.jitted = jitted  # type: ignore[attr-defined]
    call.lower = lower  # type: ignore[attr-defined]
    return call


def abstract(tree: Any, mesh: Mesh, axis: str | None = AXIS) -> Any:
    """`jax.ShapeDtypeStruct`s of `tree`'s leaves with the sharding `shard` would give them
    (for compiling ahead of time, before the values exist)."""
    def leaf(x):
        spec = P(axis) if np.ndim(x) >= 1 else P()
        dtype = x.dtype if hasattr(x, "dtype") else jax.numpy.result_type(x)
        return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=NamedSharding(mesh, spec),
                                    weak_type=bool(getattr(x, "weak_type", False)))

    return jax.tree.map(leaf, tree)
