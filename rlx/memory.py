"""Host-memory hygiene before compiling a large program (CPU peak RSS).

Building a Brax environment runs hundreds of eager JAX ops, each compiled and
cached as its own small executable; together with glibc keeping freed heap in
its arenas that is ~300 MB of resident memory before an ES generation is even
compiled (measured on Brax reacher: 690 MB -> 357 MB). Compiling the generation
then adds ~600 MB on top. `release_host_memory()` between building and
compiling lowers the peak by the former.
"""

from __future__ import annotations

import ctypes
import gc


def trim_heap() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`; a no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def release_host_memory(clear_jax_caches: bool = True) -> None:
    """Drop JAX's compilation caches (optional) and trim the heap.

    Clearing the caches only costs recompiling functions that run again (the
    eager ops of env construction do not); call it once, before compiling the
    long-running program, not in a loop.
    """
    if clear_jax_caches:
        import jax

        jax.clear_caches()
    trim_heap()


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


__all__ = ["release_host_memory", "trim_heap", "current_rss_mb"]
