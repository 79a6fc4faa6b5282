"""Contract examples of cross_representation: tiny configs of each kind of row it has (``tests/systems/contract.py``)."""

from __future__ import annotations

import torch

from tests.systems.contract import Example, feats, spec



def examples(enc: dict[str, str]) -> list[Example]:
    from sermo.systems.cross_representation.config import CrossRepresentationConfig as Cfg

    cfg = Cfg(channels=8, encoder_convs=1, encoder_lstm_layers=1, decoder_lstm1=8, decoder_convs=1,
              decoder_lstm2=8, decoder_lstm2_layers=1, postnet_convs=2, postnet_channels=8, phone_dim=8,
              classifier=[8], text_filters=[8])

    def decoder_targets(b):
        lengths = 2 * b.audio_mask.sum(1)  # the mel spectrogram at twice the features' rate
        return {"mel": torch.randn(len(b), int(lengths.max()), 80), "mel_len": lengths,
                "phones": torch.randint(0, 128, (len(b), int(lengths.max()))), "phones_len": lengths}

    return [Example("speech_small", cfg, spec(audio=feats(3, 6), speaker=True), decoder_targets),
            Example("speech_large", cfg, spec(audio=feats(3, 6), speaker=True), decoder_targets),
            Example("text", cfg, spec(text=feats(1, 5)))]
