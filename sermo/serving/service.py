"""``sermo serve``: a bundle behind HTTP (FastAPI) with a small web page.

``POST /predict`` takes a multipart form (the audio in ``file``, an optional ``transcript``)
and answers the prediction as JSON; ``GET /health`` says which model is loaded; the OpenAPI
schema is at ``/openapi.json`` (and ``/docs``); ``/`` is a page that uploads or records
audio and shows the category probabilities and a valence-arousal plot.

Limits: uploads over ``max_upload_mb`` get 413 (checked on the declared length and while
reading), audio longer than ``max_seconds`` gets 413, a content type that is not audio gets
415, audio that cannot be decoded gets 422. Predictions run one at a time behind a lock
(ASR engines are not thread-safe); requests themselves are served concurrently.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from importlib import resources
from pathlib import Path

# at module level: FastAPI resolves the endpoints' (string) annotations in this namespace
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

ACCEPTED_TYPES = ("audio/", "application/octet-stream", "video/webm", "video/ogg")


def create_app(predictor, *, max_upload_mb: float = 20.0, max_seconds: float = 60.0):
    """The FastAPI application serving ``predictor`` (a :class:`~sermo.serving.Predictor`)."""
    import sermo
    from sermo.data.audio import AudioError, audio_info, load_audio

    limit = int(max_upload_mb * 1024 * 1024)
    lock = threading.Lock()
    cfg = predictor.config
    app = FastAPI(title="sermo", version=sermo.__version__,
                  description=f"Speech emotion recognition: {cfg.system} / {cfg.row}")

    @app.middleware("http")
    async def reject_oversize(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.url.path == "/predict" and length and length.isdigit() and int(length) > limit + 64 * 1024:
            return JSONResponse({"detail": f"upload of {int(length) / 1e6:.1f} MB is over the limit of "
                                           f"{max_upload_mb:g} MB"}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("sermo.serving").joinpath("static/index.html").read_text()

    @app.get("/health")
    def health() -> dict:
        """Which model is loaded and what it predicts."""
        return {"status": "ok", "system": cfg.system, "row": cfg.row, "modalities": predictor.modalities,
                "classes": list(predictor.space.classes),
                "scale": list(predictor.scale) if predictor.scale else None,
                "transcripts": predictor.asr_engine if "text" in predictor.modalities else None,
                "max_upload_mb": max_upload_mb, "max_seconds": max_seconds}

    @app.post("/predict")
    def predict(file: UploadFile = File(..., description="audio: wav, flac, ogg, mp3"),
                transcript: str | None = Form(None, description="the words spoken (optional)")) -> dict:
        """Arousal, valence, dominance on the model's label scale, category probabilities, and what
        the model read (modalities, transcript and its source)."""
        ctype = (file.content_type or "application/octet-stream").lower()
        if not ctype.startswith(ACCEPTED_TYPES):
            raise HTTPException(415, f"content type {ctype!r} is not audio; send a wav, flac, ogg or mp3 file")
        suffix = Path(file.filename or "upload").suffix.lower() or ".wav"
        fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="sermo-upload-")
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := file.file.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise HTTPException(413, f"upload is over the limit of {max_upload_mb:g} MB")
                    out.write(chunk)
            if size == 0:
                raise HTTPException(422, f"{file.filename}: the upload is empty")
            try:
                info = audio_info(tmp)
                if info.duration > max_seconds:
                    raise HTTPException(413, f"{file.filename}: {info.duration:.1f} s of audio is over the limit of "
                                             f"{max_seconds:g} s; cut it, or use `sermo predict --segment`")
                wave = load_audio(tmp)
            except AudioError as exc:
                raise HTTPException(422, f"{file.filename}: {exc.problem}") from exc
            with lock:
                result = predictor.predict(wave, sampling_rate=16000, transcript=transcript or None)
            result.source = file.filename or "upload"
            return result.to_dict()
        finally:
            Path(tmp).unlink(missing_ok=True)

    return app


@contextlib.contextmanager
def serve_in_background(app, host: str = "127.0.0.1"):
    """Run ``app`` with uvicorn on a free port in a thread; yields its base URL, stops on exit
    (benchmarks and tests talk to it over real HTTP)."""
    import socket
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve(bundle: str, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20.0,
          max_seconds: float = 60.0, accelerator: str = "auto") -> None:
    """Load ``bundle`` and serve it until interrupted."""
    import uvicorn

    from sermo.serving.predictor import Predictor

    app = create_app(Predictor.from_pretrained(bundle, accelerator=accelerator), max_upload_mb=max_upload_mb,
                     max_seconds=max_seconds)
    print(f"sermo: serving {bundle} on http://{host}:{port}/ (API schema at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
