"""``sermo serve``: a bundle behind HTTP (FastAPI) with a small web page.

``POST /predict`` takes a multipart form (the audio in ``file``, an optional ``transcript``)
and answers the prediction as JSON; ``GET /health`` says which model is loaded; the OpenAPI
schema is at ``/docs``; ``/`` is a page that uploads or records audio and shows the category
probabilities and a valence-arousal plot.

Every limit bounds what it costs:

- the request body is counted as it arrives (declared length or chunked): past
  ``max_upload_mb`` the request gets 413 and nothing more is read or written to disk; a body
  that stalls for ``body_timeout`` seconds gets 408;
- audio longer than ``max_seconds`` gets 413, from its header before decoding and from the
  decoded samples for a header that understates it; decoding reads blocks of bounded size
  (whatever the file's rate x channels) and at most ``decoders`` uploads decode at once;
- a content type that is not audio gets 415; audio that cannot be decoded, has no samples at
  16 kHz or is shorter than the shortest prediction gets 422 (naming the upload, never a
  server path).

Predictions run one at a time behind a lock (ASR engines are not thread-safe); requests
themselves are served concurrently, on at most ``CONNECTIONS`` connections at once (more get
503). A connection must send a request's headers within ``HEADER_TIMEOUT`` seconds of opening
(or of its previous response) and an idle keep-alive one closes after ``KEEP_ALIVE`` seconds, so
silent or slow clients cannot hold the connections others need.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import threading
from importlib import resources
from pathlib import Path

# at module level: FastAPI resolves the endpoints' (string) annotations in this namespace
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import HTMLResponse, Response

CONNECTIONS, HEADER_TIMEOUT, KEEP_ALIVE = 64, 10.0, 5
ACCEPTED_TYPES = ("audio/", "application/octet-stream", "video/webm", "video/ogg")
# the page runs only its own script file: no inline script, nothing from elsewhere
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SAFE_HEADERS = {"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer"}
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


class BodyLimit:
    """ASGI middleware: counts the body of ``POST /predict`` as it is received and answers 413 as
    soon as it passes ``limit`` bytes (a chunked upload has no length to check up front), 408
    when it stalls for ``timeout`` seconds."""

    def __init__(self, app, limit: int, timeout: float, limit_text: str):
        self.app, self.limit, self.timeout, self.limit_text = app, limit, timeout, limit_text

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await _answer(send, 413, f"upload of {int(length) / 1e6:.1f} MB is over the limit of "
                                            f"{self.limit_text}")
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), timeout=self.timeout)
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the upload stalled for {self.timeout:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"upload is over the limit of {self.limit_text}")
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except HTTPException as exc:  # raised while reading, outside a route's handlers
            if started:
                raise
            await _answer(send, exc.status_code, exc.detail)


async def _answer(send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def upload_name(filename: str | None) -> str:
    """The upload's file name as it may be shown: printable, at most 100 characters."""
    name = "".join(c for c in (filename or "upload") if c.isprintable()).strip() or "upload"
    return name if len(name) <= 100 else name[:97] + "..."


def create_app(predictor, *, max_upload_mb: float = 20.0, max_seconds: float = 60.0, decoders: int = 2,
               body_timeout: float = 30.0):
    """The FastAPI application serving ``predictor`` (a :class:`~sermo.serving.Predictor`).

    Args:
        max_upload_mb: the largest body accepted.
        max_seconds: the longest audio accepted.
        decoders: uploads decoded at once (each holds at most one block of the file and its
            16 kHz result).
        body_timeout: seconds a body may stall between two parts.
    """
    import sermo
    from sermo.data.audio import SAMPLE_RATE, AudioError, AudioTooLong, load_audio

    limit = int(max_upload_mb * 1024 * 1024)
    lock = threading.Lock()
    decoding = threading.BoundedSemaphore(max(1, decoders))
    cfg = predictor.config
    app = FastAPI(title="sermo", version=sermo.__version__,
                  description=f"Speech emotion recognition: {cfg.system} / {cfg.row}")
    app.add_middleware(BodyLimit, limit=limit, timeout=body_timeout, limit_text=f"{max_upload_mb:g} MB")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("sermo.serving").joinpath("static/index.html").read_text(),
                            headers=SAFE_HEADERS)

    @app.get("/app.js", include_in_schema=False)
    def script() -> Response:
        return Response(resources.files("sermo.serving").joinpath("static/app.js").read_text(),
                        media_type="text/javascript", headers=SAFE_HEADERS)

    @app.get("/health")
    def health() -> dict:
        """Which model is loaded and what it predicts."""
        return {"status": "ok", "system": cfg.system, "row": cfg.row, "modalities": predictor.modalities,
                "classes": list(predictor.space.classes),
                "scale": list(predictor.scale) if predictor.scale else None,
                "transcripts": predictor.asr_engine if "text" in predictor.modalities else None,
                "trained_on": predictor.trained_on, "caveat": predictor.caveat,
                "max_upload_mb": max_upload_mb, "max_seconds": max_seconds,
                "window_seconds": predictor.window_seconds}

    @app.post("/predict")
    def predict(file: UploadFile = File(..., description="audio: wav, flac, ogg, mp3"),
                transcript: str | None = Form(None, description="the words spoken (optional)")) -> dict:
        """Arousal, valence, dominance on the model's label scale, category probabilities, and what
        the model read (modalities, transcript and its source)."""
        ctype = (file.content_type or "application/octet-stream").lower()
        if not ctype.startswith(ACCEPTED_TYPES):
            raise HTTPException(415, f"content type {ctype!r} is not audio; send a wav, flac, ogg or mp3 file")
        name = upload_name(file.filename)
        suffix = Path(name).suffix.lower()
        fd, tmp = tempfile.mkstemp(suffix=suffix if _SUFFIX.match(suffix) else "", prefix="sermo-upload-")
        try:
            # the body was counted as it arrived (BodyLimit): the form's file is within the limit
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(file.file, out, 1 << 20)
                size = out.tell()
            if size == 0:
                raise HTTPException(422, f"{name}: the upload is empty")
            try:
                with decoding:
                    wave = load_audio(tmp, max_seconds=max_seconds)
                with lock:
                    result = predictor.predict_signal(wave, SAMPLE_RATE, transcript or None, source=name)
            except AudioTooLong as exc:
                raise HTTPException(413, f"{name}: {exc.problem.replace(tmp, name)}; cut it, or use "
                                         "`sermo predict --segment`") from None
            except AudioError as exc:
                raise HTTPException(422, f"{name}: {exc.problem.replace(tmp, name)}") from None
            return result.to_dict()
        finally:
            Path(tmp).unlink(missing_ok=True)

    return app


def guarded_h11(header_timeout: float):
    """uvicorn's HTTP/1.1 protocol, closing a connection that has not sent a whole request head
    ``header_timeout`` seconds after it opened or after its last response (uvicorn times out only
    idle connections that have already had a response: a silent or trickling client otherwise
    holds its connection, and 64 of them shut everyone else out)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout, self._head_expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request's head arrived; its body has the app's own timeout

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def server_config(app, host: str, port: int, *, header_timeout: float = HEADER_TIMEOUT):
    """The uvicorn configuration sermo serves with (the limits in the module's docstring)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=guarded_h11(header_timeout),
                          timeout_keep_alive=KEEP_ALIVE, limit_concurrency=CONNECTIONS,
                          timeout_graceful_shutdown=10)


@contextlib.contextmanager
def serve_in_background(app, host: str = "127.0.0.1", *, header_timeout: float = HEADER_TIMEOUT):
    """Run ``app`` with uvicorn on a free port in a thread; yields its base URL, stops on exit
    (benchmarks and tests talk to it over real HTTP)."""
    import socket
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(server_config(app, host, port, header_timeout=header_timeout))
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
    """Load ``bundle`` and serve it until interrupted.

    Raises:
        ServeError: the port cannot be bound (in use, or not allowed).
    """
    import socket

    import uvicorn

    from sermo.errors import ServeError
    from sermo.serving.predictor import Predictor

    try:  # before the model loads, and before anything says it is serving
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise ServeError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); is another service using it? "
                         "Pass --port") from None
    app = create_app(Predictor.from_pretrained(bundle, accelerator=accelerator), max_upload_mb=max_upload_mb,
                     max_seconds=max_seconds)
    server = uvicorn.Server(server_config(app, host, port))
    print(f"sermo: serving {bundle} on http://{host}:{port}/ (API schema at /docs; at most {CONNECTIONS} "
          "connections at once)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"sermo: warning: {host} is reachable from other machines; the service has no authentication "
              "or TLS: put it behind a proxy that has them, or serve on 127.0.0.1", flush=True)
    server.run()
    if not server.started:
        raise ServeError(f"the service could not start on {host}:{port}; see the messages above")
