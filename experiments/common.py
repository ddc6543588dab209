"""What every experiment entry point shares: CPU devices, multi-process start-up, CLI flags.

Every experiment takes `--coordinator-address HOST:PORT --num-processes N --process-id I`
(or RLX_* / JAX_* COORDINATOR_ADDRESS / NUM_PROCESSES / PROCESS_ID): run the same
command once per process and they train one population over all processes' devices;
process 0 writes the files.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any

from rlx import distributed
from rlx.population import configure_compilation_cache, configure_cpu_devices


def setup(args: argparse.Namespace | None = None, *, multi_process: bool = True) -> bool:
    """Call in `main` right after parsing, before JAX touches a device: one XLA host device
    per core unless XLA_FLAGS says otherwise, JAX's persistent compilation cache (on unless
    RLX_COMPILATION_CACHE=0; `rlx.population.configure_compilation_cache`), then join the
    multi-process run that `args` (or the environment) configures; `--wandb` without the
    wandb package is refused first (one line, exit 2). Sets `args.multi_process`, and `args.no_progress` on
    processes other than 0; returns whether this is a multi-process run.

    `multi_process=False` (an experiment that runs its own worker processes) refuses a
    multi-process setting with a one-line error.
    """
    if getattr(args, "wandb", False):  # before anything compiles: one line if it is missing
        from rlx.logging import check_wandb

        exit_on_value_error(check_wandb)
    configure_cpu_devices()
    configure_compilation_cache()
    flags = ((args.coordinator_address, args.num_processes, args.process_id)
             if args is not None else (None, None, None))
    if multi_process:
        multi = exit_on_value_error(lambda: distributed.initialize(*flags))
    elif exit_on_value_error(lambda: distributed.resolve(*flags)) is not None:
        print("error: this experiment runs on one process (it starts its own workers); drop "
              "--coordinator-address/--num-processes/--process-id and the RLX_*/JAX_* "
              "COORDINATOR_ADDRESS/NUM_PROCESSES/PROCESS_ID variables", file=sys.stderr)
        raise SystemExit(2)
    else:
        multi = False
    if args is not None:
        args.multi_process = multi
        if multi and not distributed.is_primary():
            args.no_progress = True
    return multi


@dataclasses.dataclass
class RunArgs:
    """The flags every experiment shares (`cli` adds them to its own)."""

    out: str  # output directory (rerun with the same one to resume)
    quick: bool = False  # tiny config for tests and smoke runs
    seeds: int = 2  # seeds, trained as one program
    devices: int | None = None  # devices to shard the population over (default: as many as divide it)
    no_progress: bool = False  # no progress bar
    wandb: bool = False  # also log metrics.csv's scalars to Weights & Biases (pip install wandb)
    # multi-process: one run over several processes or hosts (default: RLX_*/JAX_*
    # COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID)
    coordinator_address: str | None = None  # multi-process: host:port of process 0
    num_processes: int | None = None  # multi-process: processes in the run
    process_id: int | None = None  # multi-process: this process, in [0, N)


_ALIASES = {"coordinator_address": ("--coordinator",)}


def cli(description: str, argv: list[str] | None, args: type | None = None,
        config: type | None = None, *, run: tuple[str, ...] | None = None,
        exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None,
        defaults: dict[str, Any] | None = None,
        aliases: dict[str, tuple[str, ...]] | None = None) -> tuple[argparse.Namespace, dict]:
    """Parse `argv` (None: sys.argv[1:]) with tyro into (namespace, config overrides).

    The flags are, in order: `RunArgs`' fields (only those named in `run`, if given), the
    fields of the experiment's own dataclass `args`, and every field of the typed `config`
    dataclass (or those in `only`, minus `exclude` and names already taken) as an optional
    override `--field-name` (kebab-case; help from the field's comment) whose default None
    means "from the preset". `defaults` replaces any flag's default; `aliases` adds old
    spellings (`{"population_size": ("--population",)}`). Booleans of the config are flags
    (`--x`, or `--x false`); integer tuples take `32,32`, `32 32` or `linear` (empty).

    Returns every flag as a namespace attribute, and the config flags that are not None as
    a dict (apply it last, over the preset). A bad flag is one `error: ...` line and exit 2.
    """
    import tyro

    defaults, aliases = dict(defaults or {}), {**_ALIASES, **(aliases or {})}
    fields: list[tuple] = []
    taken: set[str] = set()
    config_flags: list[str] = []
    for cls, names, override in ((RunArgs, run, False), (args, None, False),
                                 (config, only, True)):
        if cls is None:
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in taken or f.name in exclude or (names is not None and f.name not in names):
                continue
            kind = hints[f.name]
            if override and _is_unsupported(kind):
                continue  # e.g. strategy_kwargs (tuple of (str, Any)): set it from Python
            default = None if override else f.default
            if not override and f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            default = defaults.get(f.name, default)
            help_text = _field_help(cls, f.name)
            hint = None
            if override or (default is None and type(None) not in typing.get_args(kind)):
                kind = kind | None  # None: not given (the preset's, or the experiment's choice)
            if override and default is None:
                hint = f"(default: the preset's, else {f.default!r})" \
                    if f.default is not dataclasses.MISSING else "(default: the preset's)"
            elif default is None and help_text and "default" in help_text:
                hint = ""  # the help says it
            specs = _constructor(kind, bool_flag=override)
            if kind is bool and default is False:
                specs += (tyro.conf.FlagCreatePairsOff,)  # --quick, not also --no-quick
            meta = tyro.conf.arg(help=help_text, help_behavior_hint=hint, metavar=_metavar(kind),
                                 aliases=aliases.get(f.name))
            kw = {} if default is dataclasses.MISSING else {"default": default}
            fields.append((f.name, typing.Annotated[(kind, *specs, meta)],
                           dataclasses.field(**kw)))
            taken.add(f.name)
            if override:
                config_flags.append(f.name)
    flat = dataclasses.make_dataclass("Flags", _required_first(fields))
    spec = sys._getframe(1).f_globals.get("__spec__")
    prog = f"python -m {spec.name}" if spec is not None else None
    with _one_line_errors():
        parsed = tyro.cli(flat, args=argv, prog=prog, description=description)
    values = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}
    overrides = {k: values[k] for k in config_flags if values[k] is not None}
    return argparse.Namespace(**values), overrides


def _required_first(fields: list[tuple]) -> list[tuple]:
    """Fields without a default first, as `dataclasses` requires (only --out has none)."""
    required = [f for f in fields if f[2].default is dataclasses.MISSING]
    return required + [f for f in fields if f[2].default is not dataclasses.MISSING]


def _metavar(kind) -> str | None:
    """INT rather than tyro's {None}|INT for an optional number or string."""
    args = set(typing.get_args(kind)) - {type(None)}
    names = {int: "INT", float: "FLOAT", str: "STR", tuple[str, ...]: "STR [STR ...]"}
    return names.get(args.pop()) if len(args) == 1 else None


def _is_unsupported(kind) -> bool:
    return "Any" in str(kind) or "Callable" in str(kind)


def _field_help(cls: type, name: str) -> str | None:
    """The field's docstring or trailing comment (tyro's reader), if any."""
    try:
        from tyro import _docstrings

        return _docstrings.get_field_docstring(cls, name, ())
    except Exception:  # a private tyro helper: without it a flag just has no help
        return None


def _constructor(kind, *, bool_flag: bool) -> tuple:
    """Parsing rules beyond tyro's defaults: config booleans as flags that also take a value,
    integer tuples as comma lists (`32,32`; `linear`: empty)."""
    from tyro.constructors import PrimitiveConstructorSpec

    args = set(typing.get_args(kind)) - {type(None)}
    if bool_flag and args == {bool}:
        return (PrimitiveConstructorSpec(
            nargs="*", metavar="[true|false]", instance_from_str=_parse_bool,
            is_instance=lambda x: x is None or isinstance(x, bool),
            str_from_instance=lambda x: [str(x)]),)
    if args == {tuple[int, ...]}:
        return (PrimitiveConstructorSpec(
            nargs="*", metavar="W,W|linear", instance_from_str=parse_layers,
            is_instance=lambda x: x is None or isinstance(x, tuple),
            str_from_instance=lambda x: ["None" if x is None else ",".join(map(str, x)) or "linear"]),)
    return ()


def _parse_bool(tokens: list[str]) -> bool:
    if not tokens:
        return True
    value = tokens[0].strip().lower()
    if len(tokens) == 1 and value in ("true", "1", "yes", "false", "0", "no"):
        return value in ("true", "1", "yes")
    raise ValueError(f"expected true or false, got {' '.join(tokens)!r}")


def parse_layers(tokens: list[str] | str | None) -> tuple[int, ...] | None:
    """'32,32' or ['32', '32'] -> (32, 32); 'linear' or nothing -> () (a linear policy)."""
    if tokens is None:
        return None
    text = ",".join([tokens] if isinstance(tokens, str) else tokens).replace(" ", ",")
    if text.strip(",").strip().lower() in ("linear", "none", ""):
        return ()
    return tuple(int(h) for h in text.split(",") if h)


@contextlib.contextmanager
def _one_line_errors():
    """tyro reports a bad flag in a box; here it is one `error: ...` line (exit 2)."""
    try:
        from tyro import _errors
    except ImportError:  # a private tyro module: without it tyro prints its own message
        yield
        return

    def hook(event) -> None:
        print(f"error: {_describe(_errors, event)}", file=sys.stderr)
        raise SystemExit(2)

    with _errors.on_parse_error(hook):
        yield


def _describe(e, event) -> str:
    def name(arg) -> str:
        return arg.lowered.name_or_flags[-1] if arg is not None else "?"

    if isinstance(event, e.MissingArgs):
        return "the following arguments are required: " + ", ".join(
            name(a.arg) for a in event.missing_arguments)
    if isinstance(event, e.UnrecognizedArgs):
        return "unrecognized arguments: " + " ".join(event.tokens)
    if isinstance(event, e.InvalidChoice):
        return (f"argument {name(event.argument)}: invalid choice {event.value!r} "
                f"(choose from {', '.join(event.choices)})")
    if isinstance(event, e.BadValue):
        return f"argument {name(event.argument)}: expected a value"
    if isinstance(event, e.InstantiationFailure):
        lines = [ln.strip() for ln in event.message.splitlines() if ln.strip()]
        tried = [ln.split(": ", 1)[1] for ln in lines if ln.startswith("- <class")
                 and "NoneType" not in ln and ": " in ln]
        return f"argument {name(event.argument)}: {(tried or lines or ['invalid value'])[-1]}"
    return type(event).__name__


def exit_on_value_error(fn):
    """Run `fn()`; print a `ValueError` (bad input) as one line and exit 2."""
    try:
        return fn()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def cached(path: Path, like, make):
    """`make()` (a pytree), saved to `path` by `rlx.checkpoint`; restored instead when `path`
    holds one of the same structure (a damaged one is recomputed). Returns (tree, seconds, hit)."""
    import jax

    from rlx import checkpoint

    if path.exists():
        try:
            return checkpoint.restore_pytree(path, like), 0.0, True
        except ValueError as e:
            print(f"warning: {e}; recomputing")
    t0 = time.time()
    tree = jax.device_get(make())
    checkpoint.save_pytree(path, tree)
    return tree, time.time() - t0, False


def spec_path(out: Path, name: str, spec: dict) -> Path:
    """`out/name-<hash of spec>`: a cache entry per setting."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return out / "cache" / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


__all__ = ["setup", "RunArgs", "cli", "parse_layers", "exit_on_value_error", "cached",
           "spec_path"]
