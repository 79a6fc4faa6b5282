import json

import numpy as np
import pytest
import torch

from sermo.data.batch import Batch
from sermo.features import FeatureStore
from sermo.nn.losses import ccc_loss, ccc_per_dim
from sermo.systems.teacher_student import TeacherStudentConfig, TSModel, residual_mask, student_l2
from sermo.training.runner import run_system
from tests.conftest import small_iemocap, tiny_speech_model, tiny_text_model


def test_residual_mask_drops_the_known_outliers():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(200, 3))
    labels = 2.0 * pred + 1.0 + rng.normal(0, 0.1, size=(200, 3))  # a good linear fit...
    labels[7, 0] += 5.0  # ...with one outlier in arousal
    labels[42, 2] -= 5.0  # and one in dominance
    labels[99, 1] = np.nan  # a missing label never drops an utterance
    keep, info = residual_mask(pred, labels, 2.0)
    dropped = set(np.flatnonzero(~keep))
    assert {7, 42} <= dropped and 99 not in dropped
    assert info["w"][0] == pytest.approx(2.0, abs=0.1)
    # 2 sigma of normal residuals drops about 5% per dimension; the union over dimensions more
    assert 0.05 < (~keep).mean() < 0.2
    keep3, _ = residual_mask(pred, labels, 3.0)
    assert keep3.sum() > keep.sum()


def test_the_categorical_residual_mask_drops_what_the_teacher_gets_confidently_wrong():
    from sermo.systems.teacher_student.model import category_residual_mask

    rng = np.random.default_rng(0)
    n = 60
    classes = np.arange(n) % 3
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), classes] = 0.9 - rng.uniform(0, 0.1, n)  # the teacher is right and sure on most
    wrong = [7, 31]
    for i in wrong:  # and confidently wrong on two
        probs[i] = [0.05, 0.05, 0.05]
        probs[i, (classes[i] + 1) % 3] = 0.9
    classes[40] = -1  # unlabelled: always kept
    keep, info = category_residual_mask(probs / probs.sum(1, keepdims=True), classes, 2.0)
    assert sorted(np.flatnonzero(~keep)) == wrong and info["dropped"] == 2
    r = 1 - (probs / probs.sum(1, keepdims=True))[np.arange(n), np.maximum(classes, 0)]
    ok = classes >= 0
    assert info["rms"] == pytest.approx(np.sqrt(np.mean(r[ok] ** 2)))
    # the threshold is sigmas * rms: a looser one keeps them
    assert category_residual_mask(probs / probs.sum(1, keepdims=True), classes, 5.0)[0].all()


def test_a_categorical_model_predicts_classes_with_cross_entropy():
    cfg = TeacherStudentConfig(hidden=8, embedding=4, gru_layers=1)
    model = TSModel(audio=(1, 6), text=None, cfg=cfg, task="category", num_classes=3)
    batch = Batch(ids=["a", "b"], audio=torch.randn(2, 1, 5, 6), audio_mask=torch.ones(2, 5, dtype=torch.bool),
                  dims=torch.full((2, 3), float("nan")), category=torch.tensor([0, 2]))
    out = model(batch)
    assert out.dims is None and out.logits.shape == (2, 3)
    loss = model.losses(out, batch)["loss"]
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(out.logits, batch.category))
    with pytest.raises(ValueError, match="dims or category"):
        TSModel(audio=(1, 6), text=None, cfg=cfg, task="category", num_classes=1)


def test_residual_mask_applies_eq8_threshold_exactly():
    # Eq. 8: r = w yhat + b - y from the least-squares fit of y on yhat; an utterance goes when
    # |r| > 2 std(r) in any dimension, and stays at 2 std less a hair
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(400, 3))
    labels = 0.5 * pred - 0.2 + rng.normal(0, 0.3, size=(400, 3))
    keep, info = residual_mask(pred, labels, 2.0)
    for j in range(3):
        w, b = np.polyfit(pred[:, j], labels[:, j], 1)
        r = w * pred[:, j] + b - labels[:, j]
        assert info["dropped_by_dim"][j] == int((np.abs(r) > 2 * r.std()).sum()) > 0
        assert not keep[np.abs(r) > 2 * r.std()].any()
    r_all = np.stack([np.polyval(np.polyfit(pred[:, j], labels[:, j], 1), pred[:, j]) - labels[:, j]
                      for j in range(3)], axis=1)
    inside = (np.abs(r_all) <= 2 * r_all.std(axis=0)).all(axis=1)
    assert np.array_equal(keep, inside)


def test_the_l2_term_pulls_kept_students_to_the_teacher_and_leaves_dropped_ones():
    # the conditional student (Eq. 7 with Eq. 8's mask): after training, the kept utterances'
    # embeddings sit near the teacher's, the dropped ones' do not move towards it
    torch.manual_seed(0)
    cfg = TeacherStudentConfig(hidden=8, gru_layers=1, embedding=6)
    batch = make_batch(n=8)
    teacher = torch.randn(8, 6) * 2
    keep = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    batch.extras = {"teacher_emb": teacher, "ts_keep": keep}
    model = TSModel(audio=(1, 8), text=None, cfg=cfg, lam=30.0)
    start = torch.linalg.vector_norm(model(batch).embedding.detach() - teacher, dim=-1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        model.losses(model(batch), batch)["loss"].backward()
        opt.step()
    end = torch.linalg.vector_norm(model(batch).embedding.detach() - teacher, dim=-1)
    assert (end[:4] < 0.3 * start[:4]).all(), (start, end)
    assert (end[4:] > 0.6 * start[4:]).all(), (start, end)


def make_batch(n=6, frames=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(ids=[str(i) for i in range(n)], dims=torch.rand(n, 3, generator=g),
                 category=torch.zeros(n, dtype=torch.long), audio=torch.randn(n, 1, frames, 8, generator=g),
                 audio_mask=torch.ones(n, frames, dtype=torch.bool))


def test_l2_term_is_zero_for_masked_utterances_and_spares_the_teacher():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss = student_l2(student, teacher, keep)
    loss.backward()
    assert teacher.grad is None  # no gradient reaches the teacher
    assert student.grad[1].abs().sum() == 0 and student.grad[3].abs().sum() == 0
    assert student.grad[0].abs().sum() > 0
    assert student_l2(student, teacher, torch.zeros(4)).item() == 0.0


def test_emo_loss_is_the_papers_sum_over_dimensions():
    torch.manual_seed(0)
    batch = make_batch()
    for reduction, scale in (("sum", 1.0), ("mean", 1 / 3)):
        model = TSModel(audio=(1, 8), text=None, cfg=TeacherStudentConfig(hidden=8, gru_layers=1, embedding=6,
                                                                         emo_reduction=reduction))
        out = model(batch)
        per_dim = 1 - ccc_per_dim(out.dims, batch.dims)
        assert torch.isclose(model.losses(out, batch)["emo"], per_dim.sum() * scale)


def test_a_fine_tuned_branch_reads_the_configured_layer(tmp_path):
    from sermo.encoders.speech import SpeechSSL

    cfg = TeacherStudentConfig(hidden=8, gru_layers=1, embedding=6)
    speech = SpeechSSL(tiny_speech_model(tmp_path / "hubert"))
    one = TSModel(audio=None, text=None, cfg=cfg, speech=speech, speech_layers=[-1])
    every = TSModel(audio=None, text=None, cfg=cfg, speech=speech)
    assert one.audio.layers.raw.numel() == 1 and every.audio.layers.raw.numel() == 4
    g = torch.Generator().manual_seed(0)
    b = Batch(ids=["a", "b"], dims=torch.rand(2, 3, generator=g), category=torch.zeros(2, dtype=torch.long),
              wave=torch.randn(2, 4000, generator=g), wave_lengths=torch.tensor([4000, 3000]))
    hidden, _ = one._audio_input(b)
    assert hidden.shape[1] == 1  # the last hidden state only, as the frozen row reads it


def test_lambda_zero_is_the_audio_baseline_objective():
    cfg = TeacherStudentConfig(hidden=8, gru_layers=1, embedding=6)
    torch.manual_seed(0)
    student = TSModel(audio=(1, 8), text=None, cfg=cfg, lam=0.0)
    batch = make_batch()
    plain = student.losses(student(batch), batch)["loss"]
    batch.extras = {"teacher_emb": torch.randn(6, 6), "ts_keep": torch.ones(6)}
    out = student(batch)
    losses = student.losses(out, batch)
    assert torch.isclose(losses["loss"], ccc_loss(out.dims, batch.dims, reduction="sum"))
    assert torch.isclose(losses["loss"], plain)
    student.lam = 30.0
    assert student.losses(out, batch)["loss"] > losses["loss"]


def test_fine_tuning_touches_only_the_top_layers(tmp_path):
    from sermo.encoders.speech import SpeechSSL

    speech = SpeechSSL(tiny_speech_model(tmp_path / "hubert"))
    speech.set_trainable_layers(1)
    model = TSModel(audio=None, text=None, cfg=TeacherStudentConfig(hidden=8, gru_layers=1, embedding=6),
                    speech=speech)
    trainable = [n for n, p in model.speech.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.encoder.layers.2.") for n in trainable)
    groups = model.param_groups()
    assert groups[1][1] == 0.25 and len(groups[1][0]) == len(list(speech.parameters()))


@pytest.mark.slow
def test_every_stage_runs_with_tiny_hf_encoders(iemocap_synth, tmp_path):
    small = small_iemocap(iemocap_synth, tmp_path / "small.parquet", 4)  # 40 utterances, 5 sessions
    from sermo.data.manifest import Manifest

    m = Manifest.load(small)  # a few training utterances without a transcript: no teacher embedding for them
    m.df.loc[m.df["session"] == "Ses03", "transcript"] = None
    m.save(small)
    speech, text = tiny_speech_model(tmp_path / "hubert"), tiny_text_model(tmp_path / "bert")
    out = run_system("teacher_student", [("iemocap", small)], folds=[1], out=tmp_path / "run",
                     store=FeatureStore(tmp_path / "store"), progress=False, overrides=[
                         f"data.audio_encoder={speech}", f"data.text_encoder={text}", "data.audio_layers=[-1]",
                         "data.text_layers=[-1]", "train.epochs=1", "train.batch_size=8", "model.hidden=8",
                         "model.gru_layers=1", "model.embedding=8", "model.subsample=16", "model.finetune_layers=1",
                         "model.student_finetune=true"], profile="demo")
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["audio", "text", "multimodal", "audio_ft", "ts", "cts"]
    assert not any(r.get("skipped") for r in rows.values())
    assert all("ccc_valence" in r["mean"] for r in rows.values())
    assert rows["audio_ft"]["trainable_params"] > rows["audio"]["trainable_params"]
    report = (out / "REPORT.md").read_text()
    assert "left out of the L2 term" in report and "Pearson" in report
    share = rows["cts"]["info"][0]["discarded_share"]
    assert 0.0 <= share < 0.5
    # the fine-tuned rows' bundles rebuild their speech encoder and predict
    from sermo.serving import Predictor

    wav = sorted(iemocap_synth.rglob("*.wav"))[0]
    for row in ("audio_ft", "cts"):
        pred = Predictor.from_pretrained(out / "bundles" / row).predict_file(wav)
        assert 1.0 <= pred.valence <= 5.0 and pred.transcript is None


def test_declared_rows_plan_the_teacher_and_the_state_below_the_fine_tuned_layers():
    """The demo fine-tunes Whisper's top layer on the stored state below it (audio_ft and both
    students): the plan sizes that state, read by three models, beside the last layer the audio
    row and the teacher read; students on frozen features read the last layer instead."""
    from tests.systems.contract import planned

    uses = planned("teacher_student", "demo")
    assert uses[("whisper-tiny.en", (3,))] == (3, False, False)
    assert uses[("whisper-tiny.en", (-1,))] == (2, False, False) and uses[("minilm", (-1,))] == (2, False, False)
    frozen = planned("teacher_student", "demo", "model.student_finetune=false")
    assert frozen[("whisper-tiny.en", (3,))][0] == 1 and frozen[("whisper-tiny.en", (-1,))][0] == 4
    own = planned("teacher_student", "paper-msp")  # HuBERT Large teaches: the teacher reads its own encoder
    assert own[("hubert-large", (-1,))] == (1, False, False)
