"""Text encoders (BERT, TinyBERT, RoBERTa, MiniLM) via transformers: every layer, per token."""

from __future__ import annotations

import numpy as np
import torch

from sermo.encoders.base import Encoder, EncoderOutput, file_digest
from sermo.encoders.hub import resolve_checkpoint, weight_files


class HFTextEncoder(Encoder):
    """Per-token hidden states of every layer, with the token -> word mapping kept.

    Words are whitespace-separated; ``word_ids[t]`` is the word of token ``t`` (-1 for
    special tokens such as [CLS] and [SEP]).
    """

    modality = "text"
    frame_rate = None

    def __init__(self, source: str, *, name: str | None = None, layers=None, dtype: str = "float16",
                 device: str = "cpu", max_tokens: int = 512, batch_size: int = 32):
        super().__init__(layers=layers, dtype=dtype)
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.folder = resolve_checkpoint(source)
        self.name = name or source
        self.config = AutoConfig.from_pretrained(self.folder)
        # byte-level BPE tokenizers need a prefix space to take pre-split words
        bpe = self.config.model_type in ("roberta", "gpt2", "bart", "longformer", "deberta")
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, **({"add_prefix_space": True} if bpe else {}))
        self.model = AutoModel.from_pretrained(self.folder).to(device).eval()
        self.device = device
        self.num_layers = int(self.config.num_hidden_layers) + 1
        self.dim = int(self.config.hidden_size)
        self.max_tokens = min(max_tokens, int(getattr(self.config, "max_position_embeddings", max_tokens)))
        self.batch_size = batch_size
        self._hash = file_digest(weight_files(self.folder))

    def weights_hash(self) -> str:
        return self._hash

    @torch.inference_mode()
    def _encode_batch(self, items: list) -> list[EncoderOutput]:
        results: list[EncoderOutput | None] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: len(str(items[i])))
        keep = list(self.layers)
        for start in range(0, len(order), self.batch_size):
            group = order[start:start + self.batch_size]
            words = [str(items[i]).split() for i in group]
            enc = self.tokenizer(words, is_split_into_words=True, padding=True, truncation=True,
                                 max_length=self.max_tokens, return_tensors="pt")
            out = self.model(**{k: v.to(self.device) for k, v in enc.items()}, output_hidden_states=True)
            hidden = torch.stack(out.hidden_states, dim=1)[:, keep].float().cpu().numpy()  # (B, L, T, D)
            for row, i in enumerate(group):
                n = int(enc["attention_mask"][row].sum())
                ids = enc["input_ids"][row, :n].tolist()
                wid = [-1 if w is None else int(w) for w in enc.word_ids(row)[:n]]
                results[i] = EncoderOutput(hidden[row, :, :n], None, self.tokenizer.convert_ids_to_tokens(ids), wid)
        return results  # type: ignore[return-value]

    def encode_batch(self, items: list) -> list[EncoderOutput]:
        outs = super().encode_batch(items)
        for o in outs:
            o.hidden = np.ascontiguousarray(o.hidden)
        return outs
