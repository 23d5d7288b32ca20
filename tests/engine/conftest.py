"""Fixtures of the engine tests: tokenizers built offline (nothing downloaded).

- ``sp_tokenizer`` (:func:`sentencepiece_style`): a Unigram model with Llama-2's "legacy" SentencePiece behaviour: every call's text
  gets a "▁" prefix (normalizer ``Prepend("▁")`` + spaces as "▁", split before each "▁"), BOS added. Tokenising
  " joyful" on its own therefore starts with a stray "▁" token that the joint text "... [/INST] joyful" lacks.
- ``chat_tokenizer`` (:func:`with_chat_template`): the tiny byte-level BPE tokenizer plus ChatML special tokens and a chat template.
- ``one_torch_thread``: one intra-op torch thread for a module of tiny-model tests.
"""

from __future__ import annotations

import pytest
import torch

CORPUS = ["[INST] how do you feel today [/INST] joyful", "i feel joyful and happy", "sad angry afraid surprised joy",
          "[INST] name the emotion [/INST] sadness", "the cat sat on the mat and was happy"] * 20

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def sentencepiece_style():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=150, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def with_chat_template():
    from engine.model.base import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="session")
def sp_tokenizer():
    return sentencepiece_style()


@pytest.fixture
def chat_tokenizer():
    return with_chat_template()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny-model tests: with the CPU shared by other processes, torch's
    thread hand-offs cost more than the arithmetic (use with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
