"""RL trainers. Each module exposes ``train_<name>(cfg, components, run) -> dict`` (see ``study.train.TRAINERS``);
``common`` holds what they share (refine + filter, the policy's CE on refined tokens, timers, log rows)."""
