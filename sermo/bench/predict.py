"""``sermo bench predict``: prediction latency, throughput and the service's requests per second,
and the torch path against the exported ONNX one.

A HuBERT-base-sized speech encoder (the real ``hubert-base`` when cached, random weights
otherwise) with an audio-only baselines head is saved as a bundle and loaded through
:class:`~sermo.serving.Predictor`, exactly as a user would. Measured in one run on this
machine: the latency (p50, p95) of one 5-second utterance against the encoder's own forward
time on the same audio (target: within 1.2x), the throughput over a batch of files, and the
HTTP service's requests per second with concurrent clients on loopback. Then the bundle (or
``--bundle``'s, e.g. the demo's Whisper one) is exported with ``sermo export`` and the same files
go through both paths: files per second, real-time factor (seconds of computing per second of
audio), the exported folder's size and the largest difference between their outputs.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sermo.data.audio import SAMPLE_RATE
from sermo.data.io import write_text_atomic
from sermo.evaluation.report import markdown_table


def _bundle(folder: Path, encoder_folder: str) -> Path:
    """An audio-only baselines bundle over the encoder's last hidden state (random head)."""
    import dataclasses

    import torch

    from sermo.data.bundle import BundleConfig, save_bundle
    from sermo.data.labels import get_label_space
    from sermo.data.spec import InputSpec, ModelSpec
    from sermo.encoders import get_encoder
    from sermo.features.source import feature_input
    from sermo.systems.baselines import BaselinesConfig, build_model

    enc = get_encoder(encoder_folder, layers=[-1])
    cfg = BaselinesConfig(head="pool", hidden=128, embedding=64)
    spec = ModelSpec(InputSpec(audio=feature_input(enc)), num_classes=4)
    torch.manual_seed(0)
    model = build_model("audio", cfg, spec)
    config = BundleConfig(system="baselines", row="audio", modalities=["audio"], model=dataclasses.asdict(cfg),
                          spec=spec, label_space=get_label_space("iemocap-4").to_dict(), label_scale=[1.0, 5.0])
    return save_bundle(folder, model, config)


def _percentiles(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def _service_rps(predictor, wav: Path, *, clients: int = 4, requests: int = 24) -> dict:
    import httpx

    from sermo.serving.service import create_app, serve_in_background

    data = wav.read_bytes()
    with serve_in_background(create_app(predictor, max_upload_mb=20, max_seconds=60)) as base:
        def one(_):
            t = time.perf_counter()
            r = httpx.post(f"{base}/predict", files={"file": ("u.wav", data, "audio/wav")}, timeout=300)
            r.raise_for_status()
            return time.perf_counter() - t

        one(0)  # warm
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            lat = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - t0
    p50, p95 = _percentiles(lat)
    return {"clients": clients, "requests": requests, "rps": requests / wall, "p50_s": p50, "p95_s": p95}


def run_predict_bench(out_dir: Path, *, repeats: int = 15, batch_files: int = 16, bundle: str | None = None) -> Path:
    """Run the benchmark and write ``predict.md`` and ``predict.json`` to ``out_dir`` (the
    torch/ONNX comparison on ``bundle`` when given, else on the HuBERT-sized one)."""
    import soundfile as sf
    import torch

    from sermo.bench.extract import hubert_base_sized
    from sermo.encoders.speech import SpeechSSL
    from sermo.serving import Predictor

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="sermo-bench-"))
    folder = hubert_base_sized(tmp / "hubert")
    own = _bundle(tmp / "bundle", folder)
    predictor = Predictor.from_pretrained(own)
    rng = np.random.default_rng(0)
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    wave = (0.1 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    wav = tmp / "five_seconds.wav"
    sf.write(wav, wave, SAMPLE_RATE)

    ssl = SpeechSSL(folder).eval()
    x = torch.from_numpy(wave)[None]
    lengths = torch.tensor([x.shape[1]])
    with torch.inference_mode():
        ssl(x, lengths)  # warm
    forward, latency = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine state
        with torch.inference_mode():
            t0 = time.perf_counter()
            ssl(x, lengths)
            forward.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        predictor.predict_signal(wave, SAMPLE_RATE)
        latency.append(time.perf_counter() - t0)
    f50, f95 = _percentiles(forward)
    l50, l95 = _percentiles(latency)
    files = []
    for i in range(batch_files):
        n = int(SAMPLE_RATE * rng.uniform(2, 6))
        path = tmp / f"file{i}.wav"
        sf.write(path, wave[:n] if n <= len(wave) else np.tile(wave, 2)[:n], SAMPLE_RATE)
        files.append(str(path))
    t0 = time.perf_counter()
    predictor.predict_files(files)
    batch_wall = time.perf_counter() - t0
    audio_seconds = sum(sf.info(f).duration for f in files)
    service = _service_rps(predictor, wav)
    onnx = _onnx_vs_torch(Path(bundle) if bundle else own, tmp / "onnx", files)
    rows = [
        {"measure": "encoder forward, 5 s utterance", "p50 s": f50, "p95 s": f95},
        {"measure": "Predictor.predict_signal, 5 s utterance", "p50 s": l50, "p95 s": l95},
        {"measure": f"HTTP /predict, {service['clients']} concurrent clients", "p50 s": service["p50_s"],
         "p95 s": service["p95_s"]},
    ]
    facts = {"encoder": folder, "ratio_p50": l50 / f50, "throughput_files_per_s": batch_files / batch_wall,
             "throughput_audio_s_per_s": audio_seconds / batch_wall, "service_rps": service["rps"],
             "torch_threads": torch.get_num_threads(), "onnx": onnx}
    text = ["# sermo bench predict\n\n",
            f"Encoder: HuBERT-base-sized (`{folder}`), audio-only head; CPU, {torch.get_num_threads()} threads.\n\n",
            markdown_table(rows),
            f"\nPrediction / encoder forward (p50): **{facts['ratio_p50']:.2f}x** (target: at most 1.2x).\n\n"
            f"Throughput over {batch_files} files ({audio_seconds:.0f} s of audio): "
            f"{facts['throughput_files_per_s']:.2f} files/s, {facts['throughput_audio_s_per_s']:.1f} s of audio/s.\n\n"
            f"Service on loopback: {service['rps']:.2f} requests/s with {service['clients']} concurrent clients "
            f"({service['requests']} requests of 5 s audio).\n\n",
            f"## torch Predictor vs the exported ONNX model\n\nBundle: `{onnx['bundle']}`; the same {len(files)} files "
            f"({audio_seconds:.0f} s of audio), one after another in each path, after one warm-up file.\n\n",
            markdown_table(onnx["rows"]),
            f"\nExported folder: {onnx['folder_mb']:.1f} MB; export took {onnx['export_s']:.0f} s. Largest difference "
            f"between the two paths' outputs: {onnx['max_difference']:.1e} (A/V/D on the bundle's scale and class "
            f"probabilities).\n"]
    report = out_dir / "predict.md"
    write_text_atomic(report, "".join(text))
    write_text_atomic(out_dir / "predict.json", json.dumps({"rows": rows, **facts}, indent=2))
    return report


def _onnx_vs_torch(bundle: Path, out: Path, files: list[str]) -> dict:
    """The same files through the bundle's torch Predictor and its ONNX export, one at a time:
    files per second and real-time factor of each, the export's size and the outputs' largest
    difference."""
    import soundfile as sf
    import torch

    from sermo.serving import Predictor
    from sermo.serving.export import export_bundle
    from sermo.serving.runtime import OnnxPredictor

    t0 = time.perf_counter()
    export_bundle(bundle, out)
    export_s = time.perf_counter() - t0
    audio = sum(sf.info(f).duration for f in files)
    paths = {"torch Predictor": Predictor.from_pretrained(bundle), "ONNX runtime (no torch)": OnnxPredictor(out)}
    rows, outputs = [], {}
    for name, predictor in paths.items():
        predictor.predict_file(files[0])  # warm
        t = time.perf_counter()
        outputs[name] = [predictor.predict_file(f) for f in files]
        wall = time.perf_counter() - t
        rows.append({"path": name, "files/s": len(files) / wall, "real-time factor": wall / audio})
    worst = 0.0
    for a, b in zip(*outputs.values()):
        pairs = [(getattr(a, d), getattr(b, d)) for d in ("arousal", "valence", "dominance") if getattr(a, d) is not None]
        pairs += [(a.categories[c], b.categories[c]) for c in a.categories or {}]
        worst = max([worst] + [abs(x - y) for x, y in pairs])
    size = sum(f.stat().st_size for f in out.iterdir())
    return {"bundle": str(bundle), "rows": rows, "folder_mb": size / 1e6, "export_s": export_s,
            "max_difference": worst, "threads": torch.get_num_threads()}
