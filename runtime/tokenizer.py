"""Prompt tokenizer backed by the ``tokenizers`` library alone (no transformers).

The exporter saves the model's tokenizer as one ``tokenizer.json``; the manifest says how long
sequences are and which id pads them (SD 1.x pads with end-of-text, SD 2.x with "!"), because
those two settings change the text embedding and are not reliably inside tokenizer.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nanoedge.core.errors import PackageError


class PromptTokenizer:
    def __init__(self, path: Path, max_length: int, pad_id: int) -> None:
        from tokenizers import Tokenizer

        if not path.is_file():
            raise PackageError(f"tokenizer file '{path}' is missing", hint="re-export the package")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise PackageError(f"could not read tokenizer '{path}': {exc}", hint="re-export the package") from exc
        self.max_length = max_length
        self.pad_id = pad_id
        self._tok.enable_truncation(max_length=max_length)
        self._tok.enable_padding(length=max_length, pad_id=pad_id, pad_token=self._tok.id_to_token(pad_id) or "<pad>")

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Token ids ``[len(texts), max_length]`` as int32 (what NPUs and our export expect)."""
        return self.encode(texts)[0]

    def count(self, text: str) -> int:
        """Tokens of ``text`` the encoder reads (special tokens included, padding not; at most max_length)."""
        return int(sum(self._tok.encode(text).attention_mask))

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """Token ids plus, per text, whether it was cut at ``max_length`` (worth a warning)."""
        encodings = self._tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int32)
        return ids, [bool(e.overflowing) for e in encodings]
