"""Executes a notebook of notebooks/ in quick mode and returns its printed text."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def execute(name: str, env: dict | None = None, timeout: int = 600) -> str:
    """Run notebooks/NAME with RLX_QUICK=1 (plus `env`), restoring the environment after."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    env = {"RLX_QUICK": "1", **(env or {})}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
