"""Corrupt a correct program the way a weak policy gets it wrong: the refiner's training candidates.

    from study.mini.corrupt import corrupt, KINDS
    bad, kind = corrupt(code, random.Random(0))             # one random kind
    bad, kind = corrupt(code, rng, kinds=("off_by_one",))   # a chosen kind

Every corruption is a *small, local* edit, so the minimal fix is the original program: the refine target
restores exactly the edited spot and keeps every other character (that is what makes copying learnable).
A corruption may happen to keep the program correct (``>`` to ``>=`` with no tie among the tests): callers
check candidates against the tests and, when they still pass, train the refiner to copy them verbatim.
"""

from __future__ import annotations

import random
import re

KINDS = ("operator", "constant", "off_by_one", "missing_return", "syntax", "truncation", "name")
"""Corruption kinds: wrong operator, wrong constant, off-by-one, missing return, syntax slip, truncation,
misspelt local name."""

_OPS = {
    "+": ("-", "*"), "-": ("+",), "*": ("+", "//"), "//": ("%", "*"), "%": ("//",),
    ">": (">=", "<"), "<": ("<=", ">"), ">=": (">",), "<=": ("<",), "==": ("!=",),
}
_OP_RE = re.compile(r"(?<=[\w)\]' ])\s?(//|>=|<=|==|[+\-*%<>])\s?(?=[\w(\['-])")
_INT_RE = re.compile(r"(?<![\w.])\d+(?![\w.])")
_NAME_RE = re.compile(r"\b([a-z_]\w*)\b")
_KEYWORDS = {"def", "return", "for", "in", "if", "else", "and", "or", "not", "sum", "len", "max", "min", "abs",
             "range", "append", "upper", "replace", "count", "join", "x", "y", "xs", "s", "i", "_"}


def _body_span(code: str) -> int:
    """Offset of the first character after the ``def`` line (corruptions never touch the signature)."""
    k = code.find("\n")
    return len(code) if k < 0 else k + 1


def _operator(code: str, r: random.Random) -> str | None:
    start = _body_span(code)
    hits = [m for m in _OP_RE.finditer(code, start) if m.group(1) in _OPS]
    if not hits:
        return None
    m = r.choice(hits)
    new = r.choice(_OPS[m.group(1)])
    s, e = m.span(1)
    return code[:s] + new + code[e:]


def _constant(code: str, r: random.Random, delta: int | None = None) -> str | None:
    start = _body_span(code)
    hits = [m for m in _INT_RE.finditer(code, start)]
    if not hits:
        return None
    m = r.choice(hits)
    val = int(m.group())
    if delta is None:
        new = r.choice([v for v in range(max(0, val - 4), val + 5) if v != val] or [val + 1])
    else:
        new = max(0, val + delta) if val + delta >= 0 else val + 1
        if new == val:
            new = val + 1
    return code[: m.start()] + str(new) + code[m.end():]


def _off_by_one(code: str, r: random.Random) -> str | None:
    options = []
    if "range(" in code:
        options.append(lambda: re.sub(r"range\((\w+)\)", r"range(\1 + 1)", code, count=1))
    if re.search(r" [<>] ", code):
        options.append(lambda: re.sub(r" ([<>]) ", r" \1= ", code, count=1))
    if "[:" in code or "[-" in code:
        options.append(lambda: re.sub(r"\[(:?-?)(\d+)", lambda m: f"[{m.group(1)}{int(m.group(2)) + 1}", code, count=1))
    options.append(lambda: _constant(code, r, delta=r.choice((-1, 1))))
    return r.choice(options)()


def _missing_return(code: str, r: random.Random) -> str | None:
    lines = code.split("\n")
    idx = [i for i, ln in enumerate(lines) if ln.strip().startswith("return ")]
    if not idx:
        return None
    i = r.choice(idx)
    ln = lines[i]
    indent = ln[: len(ln) - len(ln.lstrip())]
    expr = ln.strip()[len("return "):]
    if r.random() < 0.5 and re.fullmatch(r"\w+", expr):
        del lines[i]
    else:
        lines[i] = indent + expr
    return "\n".join(lines)


def _syntax(code: str, r: random.Random) -> str | None:
    start = _body_span(code)
    options = []
    colons = [m.start() for m in re.finditer(r":\n", code)]
    if colons:
        options.append(lambda: (lambda k: code[:k] + code[k + 1:])(r.choice(colons)))
    parens = [m.start() for m in re.compile(r"\)").finditer(code, start)]
    if parens:
        options.append(lambda: (lambda k: code[:k] + code[k + 1:])(r.choice(parens)))
    body_lines = [i for i, ln in enumerate(code.split("\n")) if i > 0 and ln.strip()]
    if body_lines:
        def dedent() -> str:
            lines = code.split("\n")
            i = r.choice(body_lines)
            lines[i] = lines[i][2:] if lines[i].startswith("  ") else "  " + lines[i]
            return "\n".join(lines)

        options.append(dedent)
    return r.choice(options)() if options else None


def _truncation(code: str, r: random.Random) -> str | None:
    start = _body_span(code)
    if len(code) - start < 4:
        return None
    cut = r.randint(start + 2, len(code) - 1)
    return code[:cut].rstrip()


def _name(code: str, r: random.Random) -> str | None:
    start = _body_span(code)
    hits = [m for m in _NAME_RE.finditer(code, start) if m.group(1) not in _KEYWORDS]
    if not hits:
        return None
    m = r.choice(hits)
    w = m.group(1)
    new = w[:-1] if len(w) > 2 else w + "s"
    return code[: m.start()] + new + code[m.end():]


_FUNCS = {"operator": _operator, "constant": _constant, "off_by_one": _off_by_one,
          "missing_return": _missing_return, "syntax": _syntax, "truncation": _truncation, "name": _name}


def corrupt(code: str, r: random.Random, kinds: tuple[str, ...] = KINDS) -> tuple[str, str]:
    """A corrupted copy of ``code`` and the kind applied. Falls back across kinds when one does not apply;
    returns ``(code, "none")`` only if no kind changes anything."""
    order = list(kinds)
    r.shuffle(order)
    for kind in order:
        for _ in range(3):
            out = _FUNCS[kind](code, r)
            if out is not None and out != code:
                return out, kind
    return code, "none"
