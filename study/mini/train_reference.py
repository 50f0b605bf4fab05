"""Train the mini world's reference model from scratch on CPU: it *solves* problems and *refines* candidates.

    study mini-reference --out artifacts/mini/mini --profile mini     # ~10 min on 2 cores, then evaluation
    study mini-reference --out /tmp/smoke --profile smoke             # < 1 min, quality irrelevant (tests, CI)
    path = ensure_reference("mini")                                    # what `model: mini:mini` resolves to

Recipe (one :class:`Recipe` per profile; its hash is written to the ``DONE`` marker):

* Data: ``study.mini.problems`` train split. Each step draws a fresh batch of chat examples (seeded by step):
  - *solve*: ``solve_messages(problem)`` -> ``code_block(solution)`` (canonical form, or another correct form);
  - *refine, correct candidate*: ``refine_messages(problem, code_block(c))`` -> ``code_block(c)`` verbatim, where
    ``c`` is a correct program in a random form (local names, loop or comprehension, spacing). Because the form is
    random, the target can only be produced by reading the candidate: copying is what the loss rewards;
  - *refine, wrong candidate*: ``c`` corrupted (``study.mini.corrupt``) -> ``code_block(c)``, the minimal fix; if
    the corruption still passes the tests, the target is the candidate itself.
* Model: ``LlamaForCausalLM`` (small, tied embeddings), byte-level BPE tokenizer with a chat template
  (``study.mini.tokenizer``). Loss: next-token cross-entropy on the assistant tokens only (prompt masked).
* Optimiser: AdamW, linear warm-up then cosine decay, gradient clipping.
* Output: a normal HF folder (``save_pretrained`` model + tokenizer + generation_config with EOS), plus
  ``train_log.jsonl`` (step, loss, elapsed), ``metrics.json`` (the measured numbers below) and ``DONE``.

Evaluation on the held-out test split (sandbox verdicts, ``study.rewards.coderl_reward``): greedy solve pass@1;
T=1 samples (share of problems with mixed outcomes); the refiner on the model's own T=1 answers: correct ones kept
verbatim (and the mean share of the candidate kept as a common prefix), failing ones improved (refined reward >
candidate reward, the paper's improvement ratio at step 0); and the same on synthetic candidates (correct
variants, corrupted variants).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from study.errors import UserError
from study.mini import problems as P
from study.mini.corrupt import corrupt
from study.prompts import code_block, refine_messages, solve_messages

RECIPE_VERSION = "mini-reference-v1"


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the trained model (hashed into the DONE marker)."""

    profile: str
    """Problem set (``study.mini.problems.PROFILES``)."""
    seed: int = 0
    """Seeds the data stream, initialisation and sampling."""
    vocab_size: int = 1024
    """BPE vocabulary (special tokens included)."""
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_len: int = 512
    """Longest training sequence in tokens (longer examples are skipped)."""
    steps: int = 1400
    """Optimiser steps."""
    batch_size: int = 16
    """Examples per step (more, smaller steps taught copying faster than fewer, larger ones)."""
    lr: float = 3e-3
    """Peak learning rate (AdamW)."""
    warmup: int = 30
    """Linear warm-up steps before the cosine decay."""
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    solve_frac: float = 0.2
    """Share of solve examples in a batch."""
    refine_correct_frac: float = 0.55
    """Share of refine examples whose candidate is correct (target: the candidate verbatim)."""
    solve_canonical: float = 0.6
    """Probability that a solve target is the canonical form (else a random correct form)."""
    tokenizer_texts: int = 3000
    """Examples the BPE is trained on."""
    eval_problems: int = 200
    """Held-out test problems evaluated at the end (0: no evaluation)."""
    eval_samples: int = 4
    """T=1 samples per evaluated problem (candidates for the refiner)."""
    max_new_tokens: int = 160
    threads: int = 1
    """torch threads (1 is faster than 2 on a shared 2-core machine); not part of the hash."""

    def hash(self) -> str:
        d = asdict(self)
        d.pop("threads")
        d["_version"] = RECIPE_VERSION
        d["_problems"] = P.GENERATOR_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


RECIPES: dict[str, Recipe] = {
    "smoke": Recipe(profile="smoke", vocab_size=400, hidden_size=64, num_layers=2, num_heads=2,
                    intermediate_size=128, max_len=384, steps=30, batch_size=16, lr=3e-3, warmup=5,
                    tokenizer_texts=300, eval_problems=4, eval_samples=1, max_new_tokens=24),
    "mini": Recipe(profile="mini"),
}
"""The two profiles: ``smoke`` (< 1 minute, only has to train and load) and ``mini`` (the study's model)."""


# ------------------------------------------------------------------------------------------------- examples
def _candidate_text(code: str, r: random.Random) -> str:
    """How a candidate appears in the refine prompt: a policy answer (mostly the fenced block)."""
    return code_block(code) if r.random() < 0.92 else code


def make_example(problem, kind: str, r: random.Random, recipe: Recipe) -> tuple[list[dict], str]:
    """(prompt messages, assistant answer) of one training example: kind in solve|refine_ok|refine_bad."""
    if kind == "solve":
        return solve_messages(problem.prompt), code_block(P.solution_variant(problem, r, recipe.solve_canonical))
    good = P.solution_variant(problem, r, canonical_weight=0.3)
    if kind == "refine_ok":
        return refine_messages(problem.prompt, _candidate_text(good, r)), code_block(good)
    bad, _ = corrupt(good, r)
    target = bad if P.passes(bad, problem) else good
    return refine_messages(problem.prompt, _candidate_text(bad, r)), code_block(target)


def _kind(r: random.Random, recipe: Recipe) -> str:
    u = r.random()
    if u < recipe.solve_frac:
        return "solve"
    return "refine_ok" if u < recipe.solve_frac + recipe.refine_correct_frac else "refine_bad"


def encode(tokenizer, messages: list[dict], answer: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with the prompt masked (-100): prompt as rendered for generation, then the answer and
    EOS, tokenized separately so the boundary matches what the model sees when it generates."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return p + a, [-100] * len(p) + a


# --------------------------------------------------------------------------------------------------- training
def _lr_at(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(recipe: Recipe, out: Path, progress: bool = True, device: str = "cpu") -> dict:
    """Train into ``out`` (created), evaluate, write the HF folder + logs. Returns the metrics. ``device`` is
    for experiments only (the recipe is defined, timed and hashed on CPU)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from study.mini.tokenizer import train_tokenizer

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    load0 = os.getloadavg()[0]
    train_set = P.load_split("train", recipe.profile, seed=recipe.seed)

    # tokenizer on a sample of the training examples
    r = random.Random(f"{recipe.seed}/tokenizer")
    texts = []
    for _ in range(recipe.tokenizer_texts):
        msgs, ans = make_example(r.choice(train_set), _kind(r, recipe), r, recipe)
        texts.append(msgs[0]["content"] + "\n" + ans)
    tok = train_tokenizer(texts, recipe.vocab_size)

    config = LlamaConfig(vocab_size=len(tok), hidden_size=recipe.hidden_size, num_hidden_layers=recipe.num_layers,
                         num_attention_heads=recipe.num_heads, num_key_value_heads=recipe.num_heads,
                         intermediate_size=recipe.intermediate_size, max_position_embeddings=recipe.max_len + 256,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, rope_theta=10000.0)
    model = LlamaForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.95))

    log_path = out / "train_log.jsonl"
    log = log_path.open("w")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=recipe.steps, desc=f"mini-reference[{recipe.profile}]", unit="step")
    t_train = time.time()
    model.train()
    for step in range(recipe.steps):
        r = random.Random(f"{recipe.seed}/step/{step}")
        seqs = []
        while len(seqs) < recipe.batch_size:
            ids, labels = encode(tok, *make_example(r.choice(train_set), _kind(r, recipe), r, recipe))
            if len(ids) <= recipe.max_len:
                seqs.append((ids, labels))
        width = max(len(i) for i, _ in seqs)
        input_ids = torch.full((len(seqs), width), tok.pad_token_id)
        labels = torch.full((len(seqs), width), -100)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, (ids, lab) in enumerate(seqs):  # right padding for training
            input_ids[b, : len(ids)] = torch.tensor(ids)
            labels[b, : len(lab)] = torch.tensor(lab)
            attn[b, : len(ids)] = 1
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe)
        # answer-only loss: next-token CE where labels != -100 (HF shifts the labels inside)
        answer_ce = model(input_ids=input_ids.to(device), attention_mask=attn.to(device),
                          labels=labels.to(device)).loss
        opt.zero_grad(set_to_none=True)
        answer_ce.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        rec = {"step": step + 1, "loss": round(answer_ce.item(), 5), "elapsed": round(time.time() - t_train, 3),
               "lr": round(_lr_at(step, recipe), 6)}
        log.write(json.dumps(rec) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
    log.close()
    if bar is not None:
        bar.close()
    train_s = time.time() - t_train
    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id, do_sample=False,
                                               max_new_tokens=recipe.max_new_tokens)
    model.to("cpu").save_pretrained(out)
    model.to(device)
    tok.save_pretrained(out)

    metrics = {"profile": recipe.profile, "recipe": asdict(recipe), "recipe_hash": recipe.hash(),
               "parameters": n_params, "train_seconds": round(train_s, 1),
               "setup_seconds": round(t_train - t0, 1), "final_loss": rec["loss"],
               "torch_threads": recipe.threads, "device": device, "cpu_count": os.cpu_count(),
               "loadavg_start": round(load0, 2), "loadavg_end_train": round(os.getloadavg()[0], 2)}
    if recipe.eval_problems:
        t_eval = time.time()
        test = P.load_split("test", recipe.profile, seed=recipe.seed)[: recipe.eval_problems]
        metrics.update(evaluate(model, tok, test, recipe))
        metrics["eval_seconds"] = round(time.time() - t_eval, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


# ------------------------------------------------------------------------------------------------ evaluation
def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def refine_stats(problems, candidates: list[str], refined: list[str], cand_rewards: list[float],
                 ref_rewards: list[float]) -> dict:
    """Verbatim / common-prefix / improvement numbers of one set of (candidate, refinement) pairs."""
    from study.code import extract_code

    n = len(candidates)
    if n == 0:
        return {"n": 0}
    verb, pref = 0, 0.0
    for p, c, y in zip(problems, candidates, refined):
        cc, yy = extract_code(c, p.entry_point).strip(), extract_code(y, p.entry_point).strip()
        verb += cc == yy
        pref += _common_prefix(cc, yy) / max(1, len(cc))
    improved = sum(b > a for a, b in zip(cand_rewards, ref_rewards))
    worse = sum(b < a for a, b in zip(cand_rewards, ref_rewards))
    return {"n": n, "verbatim": round(verb / n, 4), "mean_common_prefix": round(pref / n, 4),
            "improved": round(improved / n, 4), "worse": round(worse / n, 4),
            "refined_pass": round(sum(r == 1.0 for r in ref_rewards) / n, 4)}


def evaluate(model, tok, test, recipe: Recipe) -> dict:
    """Solve pass@1 (greedy), T=1 sample outcomes, and refiner behaviour on the held-out problems."""
    import torch

    from study.generation import generate
    from study.rewards import score_completions

    def score(probs, texts):
        return score_completions(texts, [p.tests for p in probs], [p.entry_point for p in probs],
                                 workers=2)[0]

    torch.manual_seed(recipe.seed + 1)
    mnt, bs = recipe.max_new_tokens, 32
    greedy = generate(model, tok, [solve_messages(p.prompt) for p in test], mnt, 0.0, bs)
    g_rewards = score(test, [g.text for g in greedy])
    k = recipe.eval_samples
    s_probs = [p for p in test for _ in range(k)]
    samples = generate(model, tok, [solve_messages(p.prompt) for p in s_probs], mnt, 1.0, bs)
    s_rewards = score(s_probs, [g.text for g in samples])
    groups = [s_rewards[i * k:(i + 1) * k] for i in range(len(test))]
    mixed = sum(len(set(g)) > 1 for g in groups) / len(groups)
    fam = {}
    for p, rw in zip(test, g_rewards):
        f = fam.setdefault(p.meta["family"], [0, 0])
        f[0] += rw == 1.0
        f[1] += 1

    def run_refiner(probs, cands):
        if not probs:
            return {"n": 0}
        outs = generate(model, tok, [refine_messages(p.prompt, c) for p, c in zip(probs, cands)], mnt, 0.0, bs)
        texts = [o.text for o in outs]
        return refine_stats(probs, cands, texts, score(probs, cands), score(probs, texts))

    # the model's own T=1 answers as candidates (one per problem: the first correct and the first failing one)
    own_ok, own_bad = ([], []), ([], [])
    for i, p in enumerate(test):
        seen_ok = seen_bad = False
        for j in range(k):
            rw, text = s_rewards[i * k + j], samples[i * k + j].text
            if rw == 1.0 and not seen_ok:
                own_ok[0].append(p), own_ok[1].append(text)
                seen_ok = True
            elif rw < 1.0 and not seen_bad:
                own_bad[0].append(p), own_bad[1].append(text)
                seen_bad = True
    # synthetic candidates: correct programs in random forms, and corrupted ones
    r = random.Random(f"{recipe.seed}/eval")
    syn_ok, syn_bad = [], []
    for p in test:
        good = P.solution_variant(p, r, 0.3)
        syn_ok.append(code_block(good))
        syn_bad.append(code_block(corrupt(good, r)[0]))
    syn_bad_pairs = [(p, c) for p, c in zip(test, syn_bad)]
    return {
        "eval_problems": len(test),
        "solve_pass@1_greedy": round(sum(x == 1.0 for x in g_rewards) / len(test), 4),
        "solve_pass@1_greedy_by_family": {f: round(a / b, 3) for f, (a, b) in sorted(fam.items())},
        "sample_pass_rate_T1": round(sum(x == 1.0 for x in s_rewards) / len(s_rewards), 4),
        "mixed_outcome_share_T1": round(mixed, 4),
        "refine_own_correct": run_refiner(*own_ok),
        "refine_own_failing": run_refiner(*own_bad),
        "refine_variant_correct": run_refiner(list(test), syn_ok),
        "refine_corrupted": run_refiner([p for p, _ in syn_bad_pairs], [c for _, c in syn_bad_pairs]),
    }


# ---------------------------------------------------------------------------------------------- the artifact
def _is_done(path: Path, recipe: Recipe) -> bool:
    try:
        return json.loads((path / "DONE").read_text()).get("recipe_hash") == recipe.hash()
    except (OSError, ValueError):
        return False


def build(recipe: Recipe, out: str | Path, progress: bool = True, device: str = "cpu") -> dict:
    """Train atomically into ``out``: a temp folder next to it, renamed when finished (``DONE`` written last)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        metrics = train(recipe, tmp, progress=progress, device=device)
        (tmp / "DONE").write_text(json.dumps({"recipe_hash": recipe.hash(), "profile": recipe.profile}) + "\n")
        if out.exists():
            if _is_done(out, recipe):  # another process finished first
                shutil.rmtree(tmp)
                return metrics
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metrics


def recipe_for(profile: str, **overrides) -> Recipe:
    if profile not in RECIPES:
        raise UserError(f"mini-reference: unknown profile {profile!r} (choose from {', '.join(RECIPES)})")
    from dataclasses import replace

    return replace(RECIPES[profile], **{k: v for k, v in overrides.items() if v is not None})


def committed_reference(profile: str) -> Path:
    """Where the committed weights of a profile's reference live: ``<root>/models/mini/<profile>`` (the model
    the committed figures were made with; ``study.paths.models_dir``)."""
    from study.paths import models_dir

    return models_dir() / "mini" / profile


def find_reference(profile: str, root: str | Path | None = None) -> Path | None:
    """A finished reference model folder for ``profile`` (``DONE`` with this recipe's hash), without training:
    ``root/<profile>`` when ``root`` is given; else ``$STUDY_ARTIFACTS/mini/<profile>`` when that variable is
    set and the folder is finished; else the committed weights (:func:`committed_reference`); else
    ``<root>/artifacts/mini/<profile>``. ``None`` when none is finished."""
    from study.paths import artifacts_dir

    recipe = recipe_for(profile)
    if root is not None:
        cands = [Path(root) / profile]
    else:
        cands = []
        if os.environ.get("STUDY_ARTIFACTS"):
            cands.append(artifacts_dir() / "mini" / profile)
        cands += [committed_reference(profile), artifacts_dir() / "mini" / profile]
    return next((c for c in cands if _is_done(c, recipe)), None)


def ensure_reference(profile: str, root: str | Path | None = None) -> Path:
    """A finished reference model for ``profile`` (:func:`find_reference`), trained first if there is none:
    into ``root/<profile>``, or ``$STUDY_ARTIFACTS/mini/<profile>``, or ``<root>/artifacts/mini/<profile>``.

    Training is deterministic for one machine and library versions, but across machines or versions the same
    recipe gives a different model (greedy pass@1 0.360 vs 0.390 was seen), so a retrained reference prints a
    note: every number downstream of it differs, within noise, from the committed figures."""
    from study.paths import artifacts_dir

    found = find_reference(profile, root)
    if found is not None:
        return found
    path = Path(root) / profile if root is not None else artifacts_dir() / "mini" / profile
    if committed_reference(profile).exists() and root is None:
        print(f"note: training the mini reference '{profile}' from scratch into {path}: the committed weights in "
              f"{committed_reference(profile)} were made by another recipe; numbers downstream of a retrained "
              "reference differ (within noise) from the committed figures", flush=True)
    build(recipe_for(profile), path)
    return path


# ------------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (an HF model folder when done)")
    parser.add_argument("--profile", default="mini", help="smoke | mini (default mini)")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: the profile's, 0)")
    parser.add_argument("--steps", type=int, default=None, help="override the number of optimiser steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (the recipe's device) or cuda for experiments")
    parser.add_argument("--eval-problems", type=int, default=None, help="held-out problems to evaluate (0: skip)")


def run(args: argparse.Namespace) -> int:
    recipe = recipe_for(args.profile, seed=args.seed, steps=args.steps, threads=args.threads,
                        eval_problems=args.eval_problems)
    if recipe.steps <= 0:
        raise UserError("mini-reference: --steps must be positive")
    metrics = build(recipe, args.out, device=args.device)
    print(json.dumps({k: v for k, v in metrics.items() if k != "recipe"}, indent=2))
    return 0
