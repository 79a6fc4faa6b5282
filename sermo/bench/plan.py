"""``sermo bench plan``: every ``paper`` profile's plan on manifests the size of the real corpora.

The manifests are made in code with the corpora's published sizes (no audio): IEMOCAP (10,039
utterances, 12.46 h, its category counts, 5 sessions) and MSP-Podcast v1.10 (about 104,267
speaking turns, 166 h; partition and category shares approximate). A plan needs only
durations, labels, transcripts' lengths and the encoders' shapes, so these give the bytes and
passes a real run would have. The budget is a 64 GB store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sermo.data.io import write_text_atomic
from sermo.data.manifest import Manifest
from sermo.evaluation.report import markdown_table

IEMOCAP_COUNTS = {"neu": 1708, "hap": 595, "exc": 1041, "ang": 1103, "sad": 1084, "fru": 1849, "sur": 107,
                  "fea": 40, "dis": 2, "oth": 3, "xxx": 2507}
MSP_SHARES = {"N": 0.28, "H": 0.16, "A": 0.07, "S": 0.06, "U": 0.03, "F": 0.015, "D": 0.02, "C": 0.05, "O": 0.04,
              "X": 0.275}
MSP_PARTITIONS = {"Train": 0.60, "Development": 0.13, "Test1": 0.19, "Test2": 0.08}
BUDGET = 64e9


def _durations(n: int, hours: float, rng) -> np.ndarray:
    d = rng.lognormal(0.0, 0.55, n)
    return d * hours * 3600 / d.sum()


def reference_manifest(corpus: str) -> Manifest:
    """A manifest the size and shape of the real corpus (no audio; paths are placeholders)."""
    rng = np.random.default_rng(0)
    if corpus == "iemocap":
        cats = [c for c, k in IEMOCAP_COUNTS.items() for _ in range(k)]
        rng.shuffle(cats)
        n = len(cats)
        sessions = np.repeat([f"Ses0{i}" for i in range(1, 6)], -(-n // 5))[:n]
        gender = rng.choice(["F", "M"], n)
        df = pd.DataFrame({"id": [f"Ses_{i:05d}" for i in range(n)], "corpus": "iemocap", "category": cats,
                           "session": sessions, "speaker": [f"{s}_{g}" for s, g in zip(sessions, gender)],
                           "dialog": [f"{s}_d{i // 80}" for i, s in enumerate(sessions)],
                           "turn_index": np.arange(n) % 80, "scale_min": 1.0, "scale_max": 5.0})
        df["duration"] = _durations(n, 12.46, rng)
    elif corpus == "msp-podcast":
        n = 104_267
        df = pd.DataFrame({"id": [f"MSP_{i:06d}" for i in range(n)], "corpus": "msp-podcast",
                           "category": rng.choice(list(MSP_SHARES), n, p=list(MSP_SHARES.values())),
                           "partition": rng.choice(list(MSP_PARTITIONS), n, p=list(MSP_PARTITIONS.values())),
                           "scale_min": 1.0, "scale_max": 7.0})
        # speakers stay within a partition (the corpus is speaker-independent across them)
        df["speaker"] = [f"{p}_{rng.integers(0, 300)}" for p in df["partition"]]
        df["duration"] = _durations(n, 166.0, rng)
    else:
        raise ValueError(f"no reference size for {corpus!r}; known: iemocap, msp-podcast")
    for dim in ("arousal", "valence", "dominance"):
        df[dim] = rng.uniform(df["scale_min"], df["scale_max"])
    df["audio"] = "/corpus/" + df["id"] + ".wav"
    df["transcript"] = [" ".join(["word"] * max(1, int(d * 2.5))) for d in df["duration"]]
    return Manifest(df)


def paper_profiles() -> list[tuple[str, str]]:
    """``(system, profile)`` of every paper profile of the registered systems."""
    import yaml

    from sermo.systems import load_all

    out = []
    for name, sysdef in load_all().items():
        profiles = yaml.safe_load(sysdef.recipe_path.read_text())["profiles"]
        out += [(name, p) for p in profiles if p.startswith("paper")]
    return out


def run_plan_bench(out: Path) -> Path:
    """Plan every paper profile on both reference corpora with a 64 GB store; write PLANS.md."""
    import tempfile

    from sermo.data.protocols import ProtocolError
    from sermo.training import plan as plan_mod
    from sermo.training.plan import human
    from sermo.training.runner import plan_system

    free_space = plan_mod.free_space
    plan_mod.free_space = lambda root: int(BUDGET)
    rows, details = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for corpus in ("iemocap", "msp-podcast"):
                path = Path(tmp) / f"{corpus}.parquet"
                reference_manifest(corpus).save(path)
                for system, profile in paper_profiles():
                    try:
                        plan = plan_system(system, [(corpus, path)], profile=profile, progress=False)
                    except ProtocolError as exc:  # the profile's protocol is the other corpus's
                        rows.append({"system": system, "profile": profile, "corpus": corpus,
                                     "stored": "-", "live": f"n/a ({str(exc).split(';')[0]})"})
                        continue
                    live = [e for e in plan.entries if e.mode == "live"]
                    stored_h, live_h = plan.device_hours()
                    every = [e.device_hours(plan.flop_per_second, plan.folds) for e in plan.entries]
                    rows.append({"system": system, "profile": profile, "corpus": corpus,
                                 "stored": human(plan.stored_bytes), "fits 64 GB": "yes" if plan.fits() else "NO",
                                 "live": ", ".join(f"{e.encoder} ({human(e.bytes)}, {e.passes_per_epoch:,} "
                                                   "passes/epoch)" for e in live) or "-",
                                 "GPU h as planned": f"{stored_h + live_h:,.1f}",
                                 "GPU h all stored": f"{sum(o or 0 for o, _ in every):,.1f}",
                                 "GPU h all live": f"{sum(v or 0 for _, v in every):,.1f}"})
                    details.append(f"### {system} / {profile} / {corpus}\n\n{plan.table()}")
    finally:
        plan_mod.free_space = free_space
    report = Path(out) / "PLANS.md"
    write_text_atomic(report, "# Paper profiles at full corpus size, 64 GB store\n\nGPU hours: the frozen "
                      "encoders' passes x their operations at the throughput `sermo.training.cost` gives (measured "
                      "by `sermo bench extract` on this machine's GPU, else a documented 25 TFLOP/s), for every "
                      "fold; the models' own training comes on top.\n\n" + markdown_table(rows)
                      + "\n" + "\n".join(details))
    return report
