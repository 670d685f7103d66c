"""The demo model's tokenizer: a word-level ``tokenizers`` model over the caption vocabulary.

Why word-level: the world has ~50 words, so every word gets one id and BPE would only add
merges to learn. The saved folder holds ``tokenizer.json`` (what the lean runtime reads) and a
``tokenizer_config.json`` naming ``PreTrainedTokenizerFast`` so transformers (and so our
exporter) loads it too.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel

from nanoedge.runtime.demo.world import vocabulary

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"
SPECIALS = (PAD, UNK, BOS, EOS)


def build_tokenizer(max_length: int) -> Tokenizer:
    """Word-level tokenizer: lowercase, split on spaces and punctuation, wrap in BOS ... EOS, pad."""
    vocab = {token: i for i, token in enumerate([*SPECIALS, *vocabulary()])}
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(length=max_length, pad_id=vocab[PAD], pad_token=PAD)
    return tok


def save_tokenizer(tok: Tokenizer, folder: Path, max_length: int) -> None:
    """Write tokenizer.json + tokenizer_config.json (+ special tokens) via transformers."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, model_max_length=max_length
    )
    fast.save_pretrained(str(folder))
