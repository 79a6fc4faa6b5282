"""Contract examples of baselines: tiny configs of each kind of row it has (``tests/systems/contract.py``)."""

from __future__ import annotations

from tests.systems.contract import Example, feats, spec



def examples(enc: dict[str, str]) -> list[Example]:
    from sermo.systems.baselines import BaselinesConfig as Cfg

    a, t = feats(2, 6), feats(1, 5)
    return [Example("audio", Cfg(head="gru", hidden=8, embedding=8, gru_layers=1), spec(audio=a)),
            Example("text", Cfg(head="pool", hidden=8, embedding=8), spec(text=t)),
            Example("fusion", Cfg(head="pool", hidden=8, embedding=8, modality_dropout=0.5, aux_weight=0.5),
                    spec(audio=a, text=t)),
            Example("audio", Cfg(head="pool", pool="meanstd", layer_use="concat", pool_norm=True, frame_dropout=0.3,
                                 hidden=8, embedding=8), spec(audio=a)),
            Example("linear", Cfg(), spec(audio=a))]
