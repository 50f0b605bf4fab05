"""`study.generation.generate` decodes the same whatever mode a trainer left the model in."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from study.generation import generate
from study.prompts import solve_messages


def test_generate_after_training_mode_and_gradient_checkpointing(smoke_model_dir):
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(smoke_model_dir)
    model = AutoModelForCausalLM.from_pretrained(smoke_model_dir)
    prompts = [solve_messages("Write f(x) that returns x + 1.")]
    want = generate(model.eval(), tok, prompts, max_new_tokens=20)[0].token_ids
    model.train()
    model.gradient_checkpointing_enable()  # what TRL's trainer leaves behind
    model.config.use_cache = False
    got = generate(model, tok, prompts, max_new_tokens=20)[0].token_ids
    assert got == want
    assert model.training  # mode restored
