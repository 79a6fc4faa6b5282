"""Contract examples of distilled: tiny configs of each kind of row it has (``tests/systems/contract.py``)."""

from __future__ import annotations

from tests.systems.contract import Example, feats, spec



def examples(enc: dict[str, str]) -> list[Example]:
    from sermo.systems.distilled.config import DistilledConfig as Cfg

    a, t = feats(2, 6), feats(1, 5)
    cfg = Cfg(hidden=8, speech_layers=[-1])
    return [Example("audio", cfg, spec(audio=a)), Example("audio+text", cfg, spec(audio=a, text=t)),
            Example("audio+text", cfg, spec(wave=True, tokens=enc["text"], speech_model=enc["speech"],
                                        text_model=enc["text"])),
            Example("audio+text", cfg, spec(audio=a, text=feats(1, 16), text_model=enc["text"], options={"text_top": 1}))]
