"""refiner-study: a reproducible study of RL fine-tuning with an online refiner.

Flow (one direction only)::

    problems -> rollouts -> rewards -> refiner -> filter -> constraint -> update -> run log -> notebooks

See README.md for the paper-to-code index.
"""

__version__ = "0.1.0"
