"""Text encoders (BERT, TinyBERT, RoBERTa, MiniLM) via transformers: every layer, per token."""

from __future__ import annotations

import numpy as np
import torch

from sermo.encoders.base import Encoder, EncoderOutput, file_digest
from sermo.encoders.hub import load_or_build, load_pretrained, resolve_checkpoint, weight_files
from sermo.encoders.trainable import TrainableEncoder


class HFTextEncoder(Encoder):
    """Per-token hidden states of every layer, with the token -> word mapping kept.

    Words are whitespace-separated; ``word_ids[t]`` is the word of token ``t`` (-1 for
    special tokens such as [CLS] and [SEP], wherever the model puts them: XLNet's come last).
    Only real tokens are kept, whichever side the tokenizer pads.
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
        self.model = load_pretrained(AutoModel, self.folder).to(device).eval()
        self.device = device
        self.num_layers = int(self.config.num_hidden_layers) + 1
        self.dim = int(self.config.hidden_size)
        self.max_tokens = token_limit(self.config, max_tokens)
        self.batch_size = batch_size
        self._hash = file_digest(weight_files(self.folder))

    def weights_hash(self) -> str:
        return self._hash

    def num_tokens(self, text: str) -> int:
        """Tokens (special ones included) this encoder gives for a transcript, without running it."""
        return len(self.tokenizer(str(text).split(), is_split_into_words=True, truncation=True,
                                  max_length=self.max_tokens)["input_ids"])

    def to(self, device) -> "HFTextEncoder":
        self.model.to(device)
        self.device = device
        return self

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
                # the real tokens, wherever the tokenizer pads (XLNet pads on the left)
                pos = enc["attention_mask"][row].nonzero().flatten().tolist()
                ids = enc["input_ids"][row, pos].tolist()
                words_of = enc.word_ids(row)
                wid = [-1 if words_of[p] is None else int(words_of[p]) for p in pos]
                tokens = list(self.tokenizer.convert_ids_to_tokens(ids))
                results[i] = EncoderOutput(hidden[row][:, pos], None, tokens, wid)
        return results  # type: ignore[return-value]

    def encode_batch(self, items: list) -> list[EncoderOutput]:
        outs = super().encode_batch(items)
        for o in outs:
            o.hidden = np.ascontiguousarray(o.hidden)
        return outs


def token_limit(config, max_tokens: int) -> int:
    """At most ``max_tokens``, and no more than the model has positions for (XLNet, with relative
    positions only, says -1: no limit of its own)."""
    positions = int(getattr(config, "max_position_embeddings", -1) or -1)
    return min(max_tokens, positions) if positions > 0 else max_tokens


class TextTokenizer:
    """A text checkpoint's tokenizer as the models read it: whitespace words, the model's special
    tokens, at most ``max_tokens`` ids (``int64``). :class:`TextSSL` and the input pipeline of
    prediction both use it, so token ids never differ between training and serving."""

    def __init__(self, folder: str, *, max_tokens: int = 128, config=None):
        from transformers import AutoConfig, AutoTokenizer

        config = config or AutoConfig.from_pretrained(folder)
        # byte-level BPE tokenizers need a prefix space to take pre-split words
        bpe = config.model_type in ("roberta", "gpt2", "bart", "longformer", "deberta")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **({"add_prefix_space": True} if bpe else {}))
        self.max_tokens = token_limit(config, max_tokens)

    def __call__(self, text: str) -> np.ndarray:
        enc = self.tokenizer(str(text).split(), is_split_into_words=True, truncation=True,
                             max_length=self.max_tokens)
        return np.asarray(enc["input_ids"], dtype=np.int64)


class TextSSL(TrainableEncoder):
    """A transformers text model returning every hidden state; usable frozen or fine-tuned.

    :meth:`tokenize` turns a transcript into token ids (the same word splitting as
    :class:`HFTextEncoder`); ``forward(ids [B, T], lengths [B])`` returns
    ``(hidden [B, layers, T, dim], mask [B, T])``. :meth:`set_trainable_layers` unfreezes the
    top k transformer layers (``"all"``: every layer and the embeddings).
    """

    def __init__(self, folder: str, *, max_tokens: int = 128):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.config = AutoConfig.from_pretrained(folder)
        self.tokens = TextTokenizer(folder, max_tokens=max_tokens, config=self.config)
        self.tokenizer, self.max_tokens = self.tokens.tokenizer, self.tokens.max_tokens
        self.model = load_or_build(AutoModel, folder)
        self.set_trainable_layers(0)  # frozen: eval mode until layers train (TrainableEncoder)

    @property
    def num_hidden_states(self) -> int:
        """Transformer layers + 1 (index 0 is the embedding output)."""
        return int(self.config.num_hidden_layers) + 1

    def transformer_layers(self) -> torch.nn.ModuleList:
        return self.model.encoder.layer

    def all_trainable(self) -> list[torch.nn.Module]:
        """``"all"``: every layer and the embeddings."""
        return [self.model]

    def tokenize(self, text: str) -> np.ndarray:
        """Token ids (with the model's special tokens) of one transcript, int64."""
        return self.tokens(text)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]
        out = self.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=1), mask  # (B, L, T, D), (B, T)

    runs_top = True

    def forward_top(self, hidden: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
        """Run only the top ``k`` transformer layers on ``hidden`` ``(B, T, D)``, the hidden state
        just below them (e.g. read from the feature store): ``(B, k + 1, T, D)``, the input
        first. The frozen layers underneath need not run again (BERT-style encoders)."""
        layers = list(self.model.encoder.layer)
        ext = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        states = [hidden]
        for layer in layers[len(layers) - k:]:
            out = layer(states[-1], attention_mask=ext)
            states.append(out[0] if isinstance(out, tuple) else out)
        return torch.stack(states, dim=1)
