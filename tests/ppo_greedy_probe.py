"""Run by tests/test_multiprocess.py (not a test module itself): ``study`` with two test-side switches.

``PROBE_GREEDY=1``: the PPO rollout decodes greedily. Sampled rollouts depend on how the batch is split over
processes (each rank draws its own random numbers), so a 1-process and a 2-process run could not be compared step
by step. With greedy rollouts (and the smoke config's deterministic oracle refiner and sandboxed reward) both runs
see the same responses, and every remaining difference is the distributed computation itself: the prompt split,
DDP gradient averaging, the global whitening and loss normalisers, the gathered statistics.

``PROBE_KILL_RANK=r PROBE_KILL_AT=k``: rank r SIGKILLs itself right after every rank has written checkpoint k
(a process dying mid-run; the launcher then stops the others).

Everything else is the production code.

    PROBE_GREEDY=1 python tests/ppo_greedy_probe.py --root . train configs/smoke/ppo_dynamic.yaml ...   # 1 process
    accelerate launch --config_file configs/accelerate/cpu2.yaml tests/ppo_greedy_probe.py --root . train ...
"""

import os
import signal
import sys

import study.trainers.ppo as ppo
from study.cli import main


class _Greedy:
    """The policy, with ``generate`` decoding greedily."""

    def __init__(self, policy):
        self._policy = policy

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def __call__(self, *a, **kw):  # the shared prompt prefill's forward
        return self._policy(*a, **kw)

    def generate(self, **kw):
        for k in ("temperature", "top_k", "top_p", "do_sample"):
            kw.pop(k, None)
        return self._policy.generate(**kw, do_sample=False)


if os.environ.get("PROBE_GREEDY") == "1":
    _sample = ppo.sample_rollout
    ppo.sample_rollout = lambda policy, *a, **k: _sample(_Greedy(policy), *a, **k)

if os.environ.get("PROBE_KILL_AT"):
    _save = ppo.save_checkpoint

    def _save_then_die(root, step, acc, *a, **k):
        out = _save(root, step, acc, *a, **k)
        if step == int(os.environ["PROBE_KILL_AT"]) and acc.process_index == int(os.environ.get("PROBE_KILL_RANK", "1")):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    ppo.save_checkpoint = _save_then_die

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
