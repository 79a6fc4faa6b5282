"""Contract examples of label_embedding: tiny configs of each kind of row it has (``tests/systems/contract.py``)."""

from __future__ import annotations

import torch

from tests.systems.contract import Example, feats, spec



def examples(enc: dict[str, str]) -> list[Example]:
    from sermo.systems.label_embedding.config import LabelEmbeddingConfig as Cfg

    t, a1 = feats(1, 5), feats(1, 6)
    cfg = Cfg(dim=8, dropout=0.0)

    def context(b):
        return {"t_current": torch.tensor([3, 2, 4])}

    both = {"label_dims": {"text": 5, "audio": 3}}  # speech units of another width (codevectors)
    return [Example("text", cfg, spec(text=t)), Example("speech", cfg, spec(audio=a1)),
            Example("text_context_le", cfg, spec(text=t, options={"label_dims": {"text": 5}}), context),
            Example("speech_le", cfg, spec(audio=a1, options={"label_dims": {"audio": 3}}))] \
        + [Example(row, cfg, spec(audio=a1, text=t, options=both), context)
           for row in ("le_mer", "fusion_ar_plus_al", "fusion_al_only", "fusion_ar_only")] \
        + [Example("le_mer", cfg, spec(wave=True, tokens=enc["text"], speech_model=enc["speech"],
                                       text_model=enc["text"], options=both))]
