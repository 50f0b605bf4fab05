"""The mini model's tokenizer: byte-level BPE trained offline on the generated corpus, with a chat template.

    tok = train_tokenizer(texts, vocab_size=1024)    # PreTrainedTokenizerFast, bos/eos/pad + role tokens
    tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

Chat format (ChatML-like; role markers are single special tokens)::

    <|bos|><|user|>
    {content}<|end|>
    <|assistant|>
    {answer}<|end|>

``<|end|>`` is the EOS token, so generation stops at the end of the assistant turn.
"""

from __future__ import annotations

from typing import Iterable

BOS, EOS, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS) + ROLE_TOKENS

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """Byte-level BPE on ``texts`` wrapped as a ``PreTrainedTokenizerFast`` (deterministic for the same texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=list(ROLE_TOKENS), clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast
