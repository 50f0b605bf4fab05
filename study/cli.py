"""The ``study`` command line (also ``python -m study``).

    study sandbox --program p.py --tests t.json --style asserts   # run one untrusted program, print a JSON verdict
    study eval --benchmark humaneval --model DIR [--limit N]      # pass@1 on a benchmark (or --canonical)
    study mini-reference --out DIR --profile mini                 # train the mini world's reference model
    study train configs/mini/dapo_dynamic.yaml [--set k=v ...]    # one RL run -> runs/<name>/
    study reproduce --profile mini                                # run every notebook with papermill -> figures/
    study models prepare smollm2 --out DIR                        # offline SmolLM2 as an HF folder

``study --root DIR COMMAND ...`` runs against the study folder DIR (configs/, runs/, artifacts/, figures/,
notebooks/); by default it is found from the working directory (``study.paths``).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported only when their command runs, so ``study sandbox`` does not import torch. Bad input raises
``UserError``: one line on stderr, exit code 2. ``study train`` with a PPO config under an FSDP
``accelerate launch`` is refused that way before anything is written: the PPO trainer runs in one process, under
DDP (``configs/accelerate/ddp.yaml``, ``cpu2.yaml``, ``multinode.yaml``) or DeepSpeed (``zero2.yaml``, ``zero3.yaml``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from study.errors import UserError

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sandbox": ("study.sandbox_cli", "run one program against tests in the sandbox; print a JSON verdict"),
    "eval": ("study.evaluate", "pass@k of a model (or the canonical solutions) on a benchmark"),
    "mini-reference": ("study.mini.train_reference", "train the mini world's reference model from scratch"),
    "train": ("study.train", "run one RL fine-tuning experiment from a YAML config"),
    "reproduce": ("study.reproduce", "execute the notebooks with papermill and regenerate figures/"),
    "models": ("study.models", "prepare real models offline (SmolLM2 from its GGUF wheel)"),
    "bench": ("study.bench", "benchmarks: sandbox throughput, refiner overhead"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", metavar="DIR", help="the study folder (default: found from the working directory)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if only is None or name == only:
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:  # a command whose module is not there yet
                if exc.name != module:
                    raise
                continue
            mod.add_arguments(p)
            p.set_defaults(_module=mod)
    return parser


def _pop_root(argv: list[str]) -> tuple[list[str], str | None]:
    """``--root DIR`` / ``--root=DIR`` wherever it stands (no subcommand has an option of that name)."""
    out, root, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == "--root" and i + 1 < len(argv):
            root, i = argv[i + 1], i + 2
            continue
        if a.startswith("--root="):
            root = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return out, root


_WORLD_SIZE_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # what accelerate reads


def world_size() -> int:
    """How many processes this one belongs to: the launchers' environment (torchrun / ``accelerate launch`` /
    the DeepSpeed launcher set ``WORLD_SIZE``, MPI the others), or an accelerate state already set up in this
    process. 1 when neither says more."""
    import os

    n = 1
    for var in _WORLD_SIZE_ENV:
        try:
            n = max(n, int(os.environ.get(var, "1") or 1))
        except ValueError:
            pass
    state = sys.modules.get("accelerate.state")  # never imports accelerate (or torch) itself
    if state is not None and getattr(state.PartialState, "_shared_state", None):
        n = max(n, int(getattr(state.PartialState(), "num_processes", 1) or 1))
    return n


def sharded_launcher() -> str | None:
    """``"DeepSpeed"`` / ``"FSDP"`` when ``accelerate launch`` runs this process under that engine (it says so in
    ``ACCELERATE_USE_DEEPSPEED`` / ``ACCELERATE_USE_FSDP``), else None."""
    import os

    for var, name in (("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"), ("ACCELERATE_USE_FSDP", "FSDP")):
        if os.environ.get(var, "").lower() in ("1", "true", "yes"):
            return name
    return None


def refuse_unsupported_engine(args: argparse.Namespace) -> None:
    """``study train`` stops here, before anything is written, where the trainer does not run under the engine
    ``accelerate launch`` chose: PPO under FSDP (its actor + critic module is prepared for DDP or DeepSpeed), and
    DAPO under DeepSpeed ZeRO-3 (TRL's fused LM head on the frozen reference, which is not a DeepSpeed engine,
    fails there: "'Parameter' object has no attribute 'ds_status'"; ZeRO-2 runs)."""
    import os

    engine = sharded_launcher()
    zero3 = engine == "DeepSpeed" and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    if engine != "FSDP" and not zero3:
        return
    from study.config import load_config

    if getattr(args, "resume", None):
        path = Path(args.resume) / "config.yaml"
        if not path.is_file():
            return  # train's own check reports it
    elif getattr(args, "config", None):
        path = args.config
    else:
        return
    cfg = load_config(path, getattr(args, "overrides", None))
    if cfg.trainer == "ppo" and engine == "FSDP":
        raise UserError(f"the PPO trainer runs under DDP or DeepSpeed, not {engine} (one of {world_size()} "
                        "processes): launch it with configs/accelerate/ddp.yaml or zero2.yaml (nothing was written)")
    if cfg.trainer == "dapo" and zero3:
        raise UserError("the DAPO trainer does not run under DeepSpeed ZeRO-3 (TRL's fused LM head on the frozen "
                        "reference): launch it with configs/accelerate/zero2.yaml or ddp.yaml (nothing was written)")


def main(argv: list[str] | None = None) -> int:
    from study import paths

    argv, root = _pop_root(list(sys.argv[1:] if argv is None else argv))
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    if root is not None:
        if not Path(root).is_dir():
            print(f"study: error: --root {root}: not a folder", file=sys.stderr)
            return 2
        paths.set_root(root)
    try:
        if args.command == "train":
            refuse_unsupported_engine(args)
        return int(args._module.run(args) or 0)
    except UserError as exc:
        print(f"study {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
