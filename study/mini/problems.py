"""The mini world's problems: procedurally generated, seeded Python function problems with hidden asserts.

    from study.mini.problems import load_split, generate_problems, solution_variant
    train = load_split("train", profile="mini")        # list[Problem], task_id like mini/train/chain-0007
    test = load_split("test", profile="mini")          # held out: no (family, template, constants) shared with train
    code = solution_variant(test[0], random.Random(0)) # another correct program (other names / form / spacing)

A problem states everything the function must do, constants included, shows the signature and two examples,
and hides six asserts (the two examples plus four more). Families (``meta["family"]``): ``arith`` (integer
arithmetic), ``list`` (filter or map), ``str`` (strings), ``cond`` (conditionals), ``agg`` (loops/aggregates),
``comp`` (filter + map + aggregate compositions) and ``chain`` (2-5 step integer pipelines).
``meta["difficulty"]`` runs 1-4. Programs stay a few lines long: the mini model answers in 128-256 tokens.

Splits: every generated problem has a key (template, constants); a hash of the key sends it to ``test`` (1 in 8)
or ``train``, so the splits are disjoint whatever the profile, and each split lists each key once. Reference
solutions come in several correct *forms* (comprehension or loop, in-place or named accumulator, local names,
operator spacing): ``reference`` is the canonical form 0; :func:`solution_variant` draws others (used to make
the refiner's copy behaviour learnable: a refiner can only reproduce a variant by reading the candidate).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from study.errors import UserError
from study.problems import Problem, TestSuite

GENERATOR_VERSION = "mini-problems-v1"
"""Bump when generated problems change (part of the reference model's recipe hash)."""

PROFILES: dict[str, dict[str, int]] = {
    "smoke": {"train": 240, "test": 24},
    "mini": {"train": 4000, "test": 1000},
}
"""Problems per split for each profile. The mini test split is the held-out eval set of every run (issue 18: 1,000
problems, the same for every arm). Splits are prefixes of one deterministic stream, so raising a count appends
problems: the first 200 test problems (the reference model's own evaluation) and the train split are unchanged.
The appended ones are mostly ``chain`` (the small families' test keys run out: 48% chain in the first 200, 74% in
1,000), hence the per-family pass@1 in the eval summary."""

FAMILY_WEIGHTS: dict[str, float] = {
    "arith": 1.0, "list": 1.0, "str": 1.0, "cond": 1.0, "agg": 1.0, "comp": 2.0, "chain": 2.5,
}
"""Sampling weight of each family (harder families weigh more: keeps solve pass@1 in RL's useful range)."""

N_VISIBLE, N_HIDDEN_EXTRA = 2, 4
_LETTERS = "abcde"

# local-name pools: element variable, accumulator (index 0 is the canonical name)
_ELEM = ("v", "n", "item", "e", "k")
_ACC = ("total", "acc", "result", "res", "out")


# ----------------------------------------------------------------------------------------------- input makers
def _int(r: random.Random) -> tuple:
    return (r.randint(-9, 20),)


def _nat(r: random.Random) -> tuple:
    return (r.randint(0, 9),)


def _two(r: random.Random) -> tuple:
    return (r.randint(-5, 12), r.randint(-5, 12))


def _ints(r: random.Random) -> tuple:
    return ([r.randint(-5, 15) for _ in range(r.randint(0, 6))],)


def _ints1(r: random.Random) -> tuple:
    return ([r.randint(-5, 15) for _ in range(r.randint(1, 6))],)


def _word(r: random.Random) -> tuple:
    return ("".join(r.choice(_LETTERS) for _ in range(r.randint(0, 7))),)


@dataclass(frozen=True)
class Template:
    """One problem shape: a statement, correct code forms, an input sampler."""

    name: str
    """Template id and function name (``entry_point``)."""
    family: str
    difficulty: int
    args: str
    """Parameter list of the signature, e.g. ``x`` or ``xs``."""
    consts: Callable[[random.Random], dict]
    """Draws the constants."""
    statement: str
    """Sentence with ``{const}`` placeholders."""
    forms: tuple[str, ...]
    """Function bodies (no ``def`` line), ``{const}`` and ``{v}``/``{acc}`` placeholders; form 0 is canonical."""
    inputs: Callable[[random.Random], tuple]


def _c(**ranges) -> Callable[[random.Random], dict]:
    def draw(r: random.Random) -> dict:
        out = {}
        for k, spec in ranges.items():
            out[k] = r.choice(spec) if isinstance(spec, (list, tuple)) else r.randint(*spec.split_range())
        return out

    return draw


class _R:
    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def split_range(self) -> tuple[int, int]:
        return self.lo, self.hi


def R(lo: int, hi: int) -> _R:  # noqa: N802 - short constant-range helper
    return _R(lo, hi)


def _chars2(r: random.Random) -> dict:
    a, b = r.sample(_LETTERS + "xyz", 2)
    return {"c1": a, "c2": b}


TEMPLATES: tuple[Template, ...] = (
    # arith
    Template("scale_shift", "arith", 1, "x", _c(a=R(2, 9), b=R(1, 20)),
             "returns x multiplied by {a}, plus {b}",
             ("return x * {a} + {b}", "return {b} + x * {a}", "{acc} = x * {a}\n    return {acc} + {b}"), _int),
    Template("shift_mod", "arith", 1, "x", _c(a=R(1, 15), m=R(3, 11)),
             "returns (x + {a}) modulo {m}",
             ("return (x + {a}) % {m}", "{acc} = x + {a}\n    return {acc} % {m}"), _int),
    Template("mix_two", "arith", 1, "x, y", _c(a=R(2, 9)),
             "returns x times {a} minus y",
             ("return x * {a} - y", "{acc} = x * {a}\n    return {acc} - y"), _two),
    Template("square_plus", "arith", 2, "x", _c(a=R(1, 9)),
             "returns x squared plus {a} times x",
             ("return x * x + {a} * x", "return x ** 2 + {a} * x", "return x * (x + {a})"), _int),
    Template("div_mod_sum", "arith", 2, "x", _c(a=R(2, 7), b=R(2, 7)),
             "returns the integer division of x by {a} plus the remainder of x divided by {b}",
             ("return x // {a} + x % {b}", "{acc} = x // {a}\n    return {acc} + x % {b}"), _nat),
    # list filter / map
    Template("keep_greater", "list", 1, "xs", _c(a=R(-3, 10)),
             "returns the elements of xs greater than {a}, in order",
             ("return [{v} for {v} in xs if {v} > {a}]",
              "{acc} = []\n    for {v} in xs:\n        if {v} > {a}:\n            {acc}.append({v})\n    return {acc}"),
             _ints),
    Template("keep_mod", "list", 1, "xs", _c(m=R(2, 5), r=R(0, 1)),
             "returns the elements of xs whose remainder modulo {m} is {r}, in order",
             ("return [{v} for {v} in xs if {v} % {m} == {r}]",
              "{acc} = []\n    for {v} in xs:\n        if {v} % {m} == {r}:\n            {acc}.append({v})\n    return {acc}"),
             _ints),
    Template("map_affine", "list", 1, "xs", _c(a=R(2, 6), b=R(-5, 9)),
             "returns a list with each element of xs multiplied by {a}, plus {b}",
             ("return [{v} * {a} + {b} for {v} in xs]",
              "{acc} = []\n    for {v} in xs:\n        {acc}.append({v} * {a} + {b})\n    return {acc}"), _ints),
    Template("map_dist", "list", 2, "xs", _c(a=R(0, 10)),
             "returns a list with the absolute difference between each element of xs and {a}",
             ("return [abs({v} - {a}) for {v} in xs]",
              "{acc} = []\n    for {v} in xs:\n        {acc}.append(abs({v} - {a}))\n    return {acc}"), _ints),
    # strings
    Template("repeat_str", "str", 1, "s", _c(a=R(2, 4)),
             "returns the string s repeated {a} times",
             ("return s * {a}", "{acc} = ''\n    for _ in range({a}):\n        {acc} += s\n    return {acc}"), _word),
    Template("swap_char", "str", 1, "s", _chars2,
             "returns s with every '{c1}' replaced by '{c2}'",
             ("return s.replace('{c1}', '{c2}')",
              "return ''.join('{c2}' if {v} == '{c1}' else {v} for {v} in s)"), _word),
    Template("count_char", "str", 1, "s", _c(c=list(_LETTERS)),
             "returns how many times the letter '{c}' occurs in s",
             ("return s.count('{c}')",
              "{acc} = 0\n    for {v} in s:\n        if {v} == '{c}':\n            {acc} += 1\n    return {acc}"), _word),
    Template("head_tail", "str", 2, "s", _c(a=R(1, 3), b=R(1, 3)),
             "returns the first {a} characters of s followed by the last {b} characters of s",
             ("return s[:{a}] + s[-{b}:]", "{acc} = s[:{a}]\n    return {acc} + s[-{b}:]"), _word),
    Template("shout_long", "str", 2, "s", _c(a=R(2, 5)),
             "returns s in upper case if s has more than {a} characters, otherwise s unchanged",
             ("if len(s) > {a}:\n        return s.upper()\n    return s",
              "return s.upper() if len(s) > {a} else s"), _word),
    # conditionals
    Template("clamp", "cond", 2, "x", lambda r: (lambda lo: {"lo": lo, "hi": lo + r.randint(2, 10)})(r.randint(-5, 8)),
             "returns x limited to the range {lo} to {hi}: {lo} if x is below {lo}, {hi} if x is above {hi}, else x",
             ("if x < {lo}:\n        return {lo}\n    if x > {hi}:\n        return {hi}\n    return x",
              "return min(max(x, {lo}), {hi})"), _int),
    Template("above_below", "cond", 2, "x", _c(a=R(0, 10), b=R(1, 9), c=R(2, 5)),
             "returns x minus {b} if x is greater than {a}, otherwise x times {c}",
             ("if x > {a}:\n        return x - {b}\n    return x * {c}",
              "return x - {b} if x > {a} else x * {c}"), _int),
    Template("parity_step", "cond", 2, "x", _c(a=R(2, 5), b=R(1, 9)),
             "returns x // 2 when x is even, otherwise {a} * x + {b}",
             ("if x % 2 == 0:\n        return x // 2\n    return {a} * x + {b}",
              "return x // 2 if x % 2 == 0 else {a} * x + {b}"), _int),
    Template("bigger_gap", "cond", 2, "x, y", _c(a=R(1, 9)),
             "returns x - y if x is greater than y, otherwise y + {a}",
             ("if x > y:\n        return x - y\n    return y + {a}", "return x - y if x > y else y + {a}"), _two),
    # loops / aggregates
    Template("sum_range", "agg", 2, "x", _c(a=R(2, 7)),
             "returns the sum of i * {a} for every i from 0 up to x - 1 (0 when x is 0)",
             ("return sum(i * {a} for i in range(x))",
              "{acc} = 0\n    for i in range(x):\n        {acc} += i * {a}\n    return {acc}"), _nat),
    Template("max_scaled", "agg", 1, "xs", _c(a=R(2, 6)),
             "returns the largest element of the non-empty list xs multiplied by {a}",
             ("return max(xs) * {a}", "{acc} = max(xs)\n    return {acc} * {a}"), _ints1),
    Template("count_above", "agg", 2, "xs", _c(a=R(-2, 10)),
             "returns how many elements of xs are greater than {a}",
             ("return sum(1 for {v} in xs if {v} > {a})",
              "{acc} = 0\n    for {v} in xs:\n        if {v} > {a}:\n            {acc} += 1\n    return {acc}"), _ints),
    Template("sum_plus", "agg", 1, "xs", _c(a=R(1, 20)),
             "returns the sum of the elements of xs plus {a}",
             ("return sum(xs) + {a}", "{acc} = {a}\n    for {v} in xs:\n        {acc} += {v}\n    return {acc}"), _ints),
)

_COND = {"gt": ("{v} > {k}", "greater than {k}"), "lt": ("{v} < {k}", "less than {k}"),
         "even": ("{v} % 2 == 0", "even"), "odd": ("{v} % 2 == 1", "odd")}
_MAP = {"mul": ("{v} * {m}", "{v} times {m}"), "add": ("{v} + {m}", "{v} plus {m}"),
        "sub": ("{v} - {m}", "{v} minus {m}")}
_AGG = {"sum": "the sum of", "count": "how many there are of", "list": "the list, in order, of"}
_STEP = {"add": ("+", "add {k}"), "sub": ("-", "subtract {k}"), "mul": ("*", "multiply by {k}"),
         "mod": ("%", "take the remainder modulo {k}"), "div": ("//", "integer-divide by {k}")}


# ------------------------------------------------------------------------------------- problem construction
@dataclass(frozen=True)
class Spec:
    """A drawn problem before rendering: template (or generated family), constants and test inputs."""

    family: str
    name: str
    difficulty: int
    consts: tuple
    """Sorted (name, value) pairs: with ``name`` this is the split key."""

    @property
    def key(self) -> tuple:
        return (self.family, self.name, self.consts)


def _template(name: str) -> Template:
    return _TEMPLATES_BY_NAME[name]


_TEMPLATES_BY_NAME = {t.name: t for t in TEMPLATES}


def _draw_spec(r: random.Random) -> Spec:
    fams = list(FAMILY_WEIGHTS)
    fam = r.choices(fams, weights=[FAMILY_WEIGHTS[f] for f in fams])[0]
    if fam == "comp":
        cond, mp, agg = r.choice(list(_COND)), r.choice(list(_MAP)), r.choice(list(_AGG))
        consts = {"cond": cond, "map": mp, "agg": agg, "k": r.randint(-2, 8), "m": r.randint(2, 6)}
        if cond in ("even", "odd"):
            consts["k"] = 0
        return Spec("comp", f"{agg}_{mp}_{cond}", 3, tuple(sorted(consts.items())))
    if fam == "chain":
        n = r.randint(2, 5)
        steps = []
        for _ in range(n):
            op = r.choice(list(_STEP))
            k = r.randint(2, 9) if op in ("mul", "mod", "div") else r.randint(1, 15)
            steps.append((op, k))
        return Spec("chain", "chain", min(4, n - 1 + (n >= 4)), (("steps", tuple(steps)),))
    t = r.choice([t for t in TEMPLATES if t.family == fam])
    return Spec(fam, t.name, t.difficulty, tuple(sorted(t.consts(r).items())))


def _is_test(spec: Spec) -> bool:
    h = hashlib.sha256(repr(spec.key).encode()).digest()
    return h[0] % 8 == 0


def _space(code: str, compact: bool) -> str:
    return re.sub(r" ([*%]) ", r"\1", code) if compact else code


def render_code(spec: Spec, form: int = 0, v: str = _ELEM[0], acc: str = _ACC[0], compact: bool = False) -> str:
    """Program text of ``spec`` in code form ``form`` with local names ``v``/``acc`` (all forms are correct)."""
    c = dict(spec.consts)
    if spec.family == "chain":
        x = acc if form == 1 else "x"
        lines = ["def chain(x):"]
        if form == 1:
            lines.append(f"    {acc} = x")
        for op, k in c["steps"]:
            sym = _STEP[op][0]
            lines.append(f"    {x} {sym}= {k}" if form == 2 else f"    {x} = {x} {sym} {k}")
        lines.append(f"    return {x}")
        return _space("\n".join(lines), compact)
    if spec.family == "comp":
        cond = _COND[c["cond"]][0].format(v=v, k=c["k"])
        expr = _MAP[c["map"]][0].format(v=v, m=c["m"])
        agg = c["agg"]
        if form == 0:
            inner = f"{expr} for {v} in xs if {cond}"
            body = {"sum": f"return sum({inner})", "count": f"return len([{v} for {v} in xs if {cond}])",
                    "list": f"return [{inner}]"}[agg]
        else:
            init = "[]" if agg == "list" else "0"
            upd = {"sum": f"{acc} += {expr}", "count": f"{acc} += 1", "list": f"{acc}.append({expr})"}[agg]
            body = f"{acc} = {init}\n    for {v} in xs:\n        if {cond}:\n            {upd}\n    return {acc}"
        return _space(f"def {spec.name}(xs):\n    {body}", compact)
    t = _template(spec.name)
    body = t.forms[form].format(v=v, acc=acc, **c)
    return _space(f"def {t.name}({t.args}):\n    {body}", compact)


def n_forms(spec: Spec) -> int:
    if spec.family == "chain":
        return 3
    if spec.family == "comp":
        return 2
    return len(_template(spec.name).forms)


def _sentence(spec: Spec) -> tuple[str, str]:
    """(signature, what it returns)."""
    c = dict(spec.consts)
    if spec.family == "chain":
        steps = ", then ".join(_STEP[op][1].format(k=k) for op, k in c["steps"])
        return "def chain(x):", f"starts from the integer x, and in this order: {steps}; it returns the result"
    if spec.family == "comp":
        cond = _COND[c["cond"]][1].format(k=c["k"])
        what = _MAP[c["map"]][1].format(v="v", m=c["m"])
        if c["agg"] == "count":
            return f"def {spec.name}(xs):", f"returns how many elements v of xs are {cond}"
        return f"def {spec.name}(xs):", f"returns {_AGG[c['agg']]} {what} for each element v of xs that is {cond}"
    t = _template(spec.name)
    return f"def {t.name}({t.args}):", t.statement.format(**c)


def _call(name: str, args: tuple) -> str:
    return f"{name}({', '.join(repr(a) for a in args)})"


def _entry(spec: Spec) -> str:
    return "chain" if spec.family == "chain" else spec.name


def _input_sampler(spec: Spec) -> Callable[[random.Random], tuple]:
    if spec.family == "chain":
        return _int
    if spec.family == "comp":
        return _ints
    return _template(spec.name).inputs


def build_problem(spec: Spec, task_id: str, seed: int) -> Problem:
    """Render ``spec``: statement with two examples, six hidden asserts computed from the canonical solution."""
    code = render_code(spec)
    ns: dict = {}
    exec(compile(code, "<reference>", "exec"), ns)  # our own generated code, trusted
    fn = ns[_entry(spec)]
    r = random.Random(f"{seed}/{task_id}/inputs")
    sample = _input_sampler(spec)
    seen, inputs = set(), []
    for _ in range(200):
        a = sample(r)
        if repr(a) not in seen:
            seen.add(repr(a))
            inputs.append(a)
        if len(inputs) == N_VISIBLE + N_HIDDEN_EXTRA:
            break
    calls = [(_call(_entry(spec), a), repr(fn(*[list(x) if isinstance(x, list) else x for x in a])))
             for a in inputs]
    sig, what = _sentence(spec)
    examples = "\n".join(f"{c} == {out}" for c, out in calls[:N_VISIBLE])
    prompt = f"Write a Python function that {what}.\n\n{sig}\n\nExamples:\n{examples}"
    cases = tuple(f"assert {c} == {out}" for c, out in calls)
    return Problem(task_id=task_id, prompt=prompt, tests=TestSuite(style="asserts", cases=cases),
                   entry_point=_entry(spec), reference=code, source="mini",
                   meta={"family": spec.family, "template": spec.name, "difficulty": spec.difficulty,
                         "consts": spec.consts})


def generate_problems(seed: int, n: int, split: str = "train", start: int = 0) -> list[Problem]:
    """``n`` distinct problems of ``split`` (``train`` | ``test``) drawn from the stream seeded by ``seed``.
    Same arguments, same problems. Keys (family, template, constants) never cross splits."""
    if split not in ("train", "test"):
        raise UserError(f"mini: split must be train or test, got {split!r}")
    r = random.Random(f"mini-stream/{seed}")
    out: list[Problem] = []
    seen: set = set()
    counts: dict[str, int] = {}
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * (n + 10):
            raise UserError(f"mini: cannot draw {n} distinct {split} problems")
        spec = _draw_spec(r)
        if _is_test(spec) != (split == "test") or spec.key in seen:
            continue
        seen.add(spec.key)
        i = counts.get(spec.family, 0)
        counts[spec.family] = i + 1
        out.append(build_problem(spec, f"mini/{split}/{spec.family}-{i:04d}", seed))
    return out[start:]


@lru_cache(maxsize=8)
def _cached_split(split: str, profile: str, seed: int) -> tuple[Problem, ...]:
    return tuple(generate_problems(seed, PROFILES[profile][split], split))


def load_split(split: str, profile: str = "mini", seed: int = 0) -> list[Problem]:
    """The fixed ``train`` or ``test`` split of a profile (``smoke`` | ``mini``)."""
    if profile not in PROFILES:
        raise UserError(f"mini: unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    if split not in ("train", "test"):
        raise UserError(f"mini: split must be train or test, got {split!r}")
    return list(_cached_split(split, profile, seed))


def _tuplify(x):
    return tuple(_tuplify(i) for i in x) if isinstance(x, (list, tuple)) else x


def spec_of(problem: Problem) -> Spec:
    """The :class:`Spec` behind a mini problem (from its ``meta``; survives a JSON round trip)."""
    m = problem.meta
    return Spec(m["family"], m["template"], m["difficulty"], _tuplify(m["consts"]))


def solution_variant(problem: Problem, r: random.Random, canonical_weight: float = 0.0) -> str:
    """A correct program for a mini ``problem`` in a random form: code form, local names, operator spacing."""
    spec = spec_of(problem)
    if r.random() < canonical_weight:
        return problem.reference or render_code(spec)
    return render_code(spec, form=r.randrange(n_forms(spec)), v=r.choice(_ELEM), acc=r.choice(_ACC),
                       compact=r.random() < 0.25)


def passes(code: str, problem: Problem) -> bool:
    """In-process check of *generated* code (references, their corruptions) on the hidden asserts. Trusted code
    only: model outputs go through ``study.sandbox``."""
    ns: dict = {}
    try:
        exec(compile(code, "<candidate>", "exec"), ns)
        exec(compile("\n".join(problem.tests.cases), "<tests>", "exec"), ns)
    except Exception:  # noqa: BLE001 - any failure is a fail
        return False
    return True
