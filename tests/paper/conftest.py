"""The paper-path check's set-up: small built-in corpora and the tiny Hub cache, made once per
test run, and a helper that runs ``sermo run`` on them in a subprocess with the cache offline.

These tests carry the ``paper`` marker: ``make test`` leaves them out, ``make check-paper`` (which
``.ci/run`` calls after ``make test``) runs them. ``SERMO_PAPER_ACCELERATOR`` (``cpu``, ``gpu``)
and ``SERMO_PAPER_PRECISION`` (``32``, ``bf16-mixed``) run them on another device or precision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class PaperEnv:
    """Where the check's corpora, Hub cache, feature store and runs are."""

    root: Path
    iemocap: Path
    msp: Path
    hub: Path
    store: Path

    def environ(self) -> dict:
        env = dict(os.environ)
        env.update(HF_HUB_CACHE=str(self.hub), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   SERMO_MODELS=str(self.root / "models"), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        env.pop("HF_HOME", None)
        return env

    def corpus(self, layout: str) -> Path:
        return {"iemocap": self.iemocap, "msp-podcast": self.msp}[layout]

    def sermo(self, args: list[str], *, log: Path, timeout: float = 900, launcher: list[str] | None = None):
        """Run ``sermo ARGS`` (or ``launcher + ARGS``) with the tiny cache; output goes to ``log``.
        Fails the test with the log's tail when it exits non-zero."""
        cmd = (launcher or [sys.executable, "-m", "sermo.cli"]) + args
        with open(log, "w") as f:
            proc = subprocess.run(cmd, env=self.environ(), stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                                  cwd=self.root)
        if proc.returncode != 0:
            tail = log.read_text()[-4000:]
            pytest.fail(f"`sermo {' '.join(args)}` exited {proc.returncode}:\n{tail}")
        return proc


@pytest.fixture(scope="session")
def paper_env(tmp_path_factory) -> PaperEnv:
    from sermo.data.corpora import prepare
    from sermo.data.synth import synthesize_corpus
    from tests.paper.tiny_hub import build_tiny_hub, corpus_words

    root = tmp_path_factory.mktemp("paper")
    iemocap, msp = root / "iemocap", root / "msp"
    # five sessions of two speakers each and MSP-Podcast's partitions, at the layouts' small sizes
    synthesize_corpus("iemocap", iemocap, utterances=100, seed=1, progress=False)
    synthesize_corpus("msp-podcast", msp, utterances=80, seed=2, progress=False)
    words = corpus_words([*prepare("iemocap", iemocap).df["transcript"], *prepare("msp-podcast", msp).df["transcript"]])
    hub = build_tiny_hub(root / "hub", words)
    return PaperEnv(root, iemocap, msp, hub, root / "store")


def results_of(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())
