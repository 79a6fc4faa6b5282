"""Contract examples of teacher_student: tiny configs of each kind of row it has (``tests/systems/contract.py``)."""

from __future__ import annotations

import torch

from tests.systems.contract import Example, feats, spec



def examples(enc: dict[str, str]) -> list[Example]:
    from sermo.systems.teacher_student import TeacherStudentConfig as Cfg

    a, t = feats(2, 6), feats(1, 5)
    cfg = Cfg(hidden=8, gru_layers=1, embedding=6)

    def student(b):
        return {"teacher_emb": torch.randn(len(b), 6), "ts_keep": torch.tensor([1.0, 0.0, 1.0])}

    return [Example("audio", cfg, spec(audio=a)), Example("text", cfg, spec(text=t)),
            Example("multimodal", cfg, spec(audio=a, text=t)), Example("cts", cfg, spec(audio=a), student),
            Example("audio_ft", cfg, spec(wave=True, speech_model=enc["speech"]))]
