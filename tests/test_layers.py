"""The architecture's import rules, checked statically (see the README's "Architecture").

Layers, bottom to top; a module may import only from its own layer or below:

    0  rlx.population rlx.memory rlx.distributed rlx.optim rlx.logging rlx.training rlx.checkpoint
    1  rlx.envs rlx.distributions rlx.networks rlx.losses rlx.lm rlx.replay
    2  rlx.rollout
    3  rlx.algos rlx.es
    4  rlx.epg rlx.softq_identity
    5  rlx.runner
    experiments/  (rlx + experiments.common; never each other)
    tests/        (rlx; an experiment only through its `main`)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "rlx.population": 0, "rlx.memory": 0, "rlx.distributed": 0, "rlx.optim": 0,
    "rlx.logging": 0, "rlx.training": 0, "rlx.checkpoint": 0,
    "rlx.envs": 1, "rlx.distributions": 1, "rlx.networks": 1, "rlx.losses": 1, "rlx.lm": 1,
    "rlx.scaling_laws": 1, "rlx.wpg_flow": 1, "rlx.replay": 1,
    "rlx.rollout": 2,
    "rlx.algos": 3, "rlx.es": 3,
    "rlx.epg": 4, "rlx.softq_identity": 4,
    "rlx.runner": 5,
}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in the file; `from rlx import x` counts as
    rlx.x (a submodule or a name re-exported by the package)."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("rlx", "experiments", "rlx.algos"):
                out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_every_rlx_module_has_a_layer():
    missing = [_module_name(p) for p in _files("rlx")
               if _module_name(p) != "rlx" and _layer(_module_name(p)) is None]
    assert not missing, f"add these to the layer table: {missing}"


@pytest.mark.parametrize("path", _files("rlx"), ids=lambda p: str(p.relative_to(ROOT)))
def test_rlx_imports_only_its_layer_or_below(path):
    me = _module_name(path)
    mine = _layer(me)
    if mine is None:  # the package's __init__ (sets XLA flags)
        return
    bad = []
    for line, mod in _imports(path):
        if mod.split(".")[0] == "experiments":
            bad.append(f"{line}: {mod} (rlx never imports experiments)")
        if mod.startswith("rlx.") and (_layer(mod) or 0) > mine:
            bad.append(f"{line}: {mod} (layer {_layer(mod)} > {me}'s {mine})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", _files("experiments"), ids=lambda p: p.name)
def test_experiments_never_import_each_other(path):
    bad = [f"{line}: {mod}" for line, mod in _imports(path)
           if mod.split(".")[0] == "experiments" and mod not in ("experiments", "experiments.common")]
    assert not bad, "\n".join(bad)


def _scopes(tree: ast.AST):
    """(scope node, names bound in it by `from experiments import ...`), for the module and
    every function (imports inside a function bind only there)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = [n for n in ast.walk(node) if isinstance(n, ast.ImportFrom)
                    and n.module == "experiments"
                    and _enclosing(tree, n) is node]
            names = {a.asname or a.name for n in body for a in n.names}
            if names:
                yield node, names


def _enclosing(tree: ast.AST, target: ast.AST) -> ast.AST:
    """The innermost module or function containing `target`."""
    best = tree
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                n is target for n in ast.walk(node)):
            if any(n is node for n in ast.walk(best)):
                best = node
    return best


@pytest.mark.parametrize("path", _files("tests"), ids=lambda p: p.name)
def test_tests_use_experiments_only_through_main(path):
    tree = ast.parse(path.read_text())
    bad = []
    for scope, names in _scopes(tree):
        bad += [f"{node.lineno}: {node.value.id}.{node.attr}" for node in ast.walk(scope)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in names and node.attr != "main"]
    bad += [f"{node.lineno}: from {node.module} import ..." for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            and node.module.startswith("experiments.")]
    assert not bad, "tests call experiments only through main([...]):\n" + "\n".join(bad)


def _calls(folder: str, needle: str) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{i}" for p in _files(folder)
            for i, line in enumerate(p.read_text().splitlines(), 1) if needle in line]


def test_one_home_for_orbax_and_the_optimiser_step():
    orbax = [f for f in _calls("rlx", "orbax") + _calls("experiments", "orbax")
             if not f.startswith("rlx/checkpoint.py")]
    assert not orbax, f"orbax is used only in rlx/checkpoint.py: {orbax}"
    steps = [f for f in _calls("rlx", "apply_updates") + _calls("experiments", "apply_updates")
             if not f.startswith("rlx/optim.py")]
    assert not steps, f"optimiser steps are taken only by rlx.optim.optimizer_step: {steps}"
