"""What a notebook hands to its reader and to ``study reproduce``: figures, tables, notes, verdict rows.

    from study import outputs
    outputs.save_figure(fig, "fig4_training_dynamics", figures_dir)   # PNG + PDF, shown inline, figure closed
    outputs.save_table(df, "table1_pass_at_1", figures_dir)           # CSV + Markdown, shown inline
    outputs.note("share of refinements with r(y') > r(y) = 0.31", improved_share=0.31)

Files are written atomically (temp file + rename). Inside a notebook kernel every saved figure and table is also
displayed (a PNG image and a Markdown table), so an executed notebook shows what it saved, in JupyterLab and on a
code-hosting site. When ``STUDY_OUTPUT_LOG`` is set (``study reproduce`` sets it for each notebook) every saved
figure/table, note and verdict row is appended to that JSON-lines file, which becomes the manifest entry.

``batch()`` is true when ``study reproduce`` executes the notebook unattended (``STUDY_BATCH=1``): explorers
render a static view and progress bars are off (``TQDM_DISABLE=1``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

OUTPUT_LOG_ENV = "STUDY_OUTPUT_LOG"
BATCH_ENV = "STUDY_BATCH"


def batch() -> bool:
    """Executed unattended by ``study reproduce`` (static views, no progress bars)."""
    return os.environ.get(BATCH_ENV, "") not in ("", "0")


def in_kernel() -> bool:
    """Running inside a Jupyter kernel (where ``display`` reaches a notebook)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    return ip is not None and hasattr(ip, "kernel")


def display(obj) -> None:
    """``IPython.display.display`` inside a kernel; nothing elsewhere (tests, scripts)."""
    if in_kernel():
        from IPython.display import display as _display

        _display(obj)


def log(entry: dict) -> None:
    path = os.environ.get(OUTPUT_LOG_ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_figure(fig, name: str, figures_dir: str | Path = "figures", formats: Sequence[str] = ("png", "pdf"),
                show: bool = True) -> None:
    """Write ``<figures_dir>/<name>.png`` and ``.pdf``, display the PNG inline (in a kernel), close the figure.
    Returns nothing (so a notebook cell ending with it shows the figure, not a list of paths)."""
    import matplotlib.pyplot as plt

    out = []
    for ext in formats:
        p = Path(figures_dir) / f"{name}.{ext}"
        _atomic(p, lambda t, ext=ext: fig.savefig(t, format=ext, dpi=150, bbox_inches="tight"))
        out.append(p)
    log({"kind": "figure", "name": name, "paths": [str(p) for p in out]})
    png = next((p for p in out if p.suffix == ".png"), None)
    if show and png is not None:
        from IPython.display import Image

        display(Image(data=png.read_bytes(), format="png"))
    plt.close(fig)  # else the inline backend would show it a second time


def to_markdown(df, floatfmt: str = ".3g") -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    def fmt(v):
        if isinstance(v, float):
            return "" if v != v else format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", "<br>")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def save_table(df, name: str, figures_dir: str | Path = "figures", show: bool = True) -> None:
    """Write ``<figures_dir>/tables/<name>.csv`` and ``.md`` (atomically) and display the table inline."""
    base = Path(figures_dir) / "tables"
    csv, md = base / f"{name}.csv", base / f"{name}.md"
    text = to_markdown(df)
    _atomic(csv, lambda t: df.to_csv(t, index=False))
    _atomic(md, lambda t: Path(t).write_text(text))
    log({"kind": "table", "name": name, "paths": [str(csv), str(md)]})
    if show:
        from IPython.display import Markdown

        display(Markdown(text))


def note(text: str, **numbers) -> None:
    """Print a computed finding that is not one of the paper's claims (it goes to the manifest and RESULTS.md)."""
    print(text)
    log({"kind": "verdict", "text": text, "numbers": numbers})
