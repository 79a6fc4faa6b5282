"""The first folds' analyses: the K grid (Figure 3), the initialisations (Table 1) and the
per-token and per-frame label scores of one utterance (Figure 4)."""

from __future__ import annotations

from sermo.systems.label_embedding.config import SPEECH_INITS, TEXT_INITS, LabelEmbeddingConfig
from sermo.systems.label_embedding.model import LEMER


def test_scores(ctx, model, data) -> dict:
    """UA and WA of a model on the fold's first test set (for the analyses)."""
    test = ctx.tests[0]
    m = ctx.score(ctx.predict(model, data, [test])[test])
    return {"ua": m["ua"], "wa": m["wa"]}


def k_grid(ctx, train, audio, models: dict | None = None) -> list[dict]:
    """Figure 3: ``speech_le`` with each K of the grid, UA and WA on the fold's test set (the row's
    own K, with its codebook initialisation, is the row itself: not trained twice)."""
    cfg: LabelEmbeddingConfig = ctx.cfg.model
    out = []
    for k in cfg.k_grid:
        if k == cfg.speech_k and cfg.speech_init == "codebook" and models and "speech_le" in models:
            out.append({"k": k, **test_scores(ctx, *models["speech_le"])})
            continue
        trained, _ = train(f"kgrid_speech_le_k{k}", speech_src=audio, s_init="codebook", s_k=k)
        out.append({"k": k, **test_scores(ctx, *trained)})
    return out


def compare_inits(ctx, train, models: dict, context, audio) -> list[dict]:
    """Table 1 A3-A5 and B3-B5: ``text_context_le`` and ``speech_le`` with each initialisation of
    their label embedding (the rows' own initialisation is the row itself), on the fold's test set."""
    cfg: LabelEmbeddingConfig = ctx.cfg.model
    out = []
    for row, inits, default, key in (("text_context_le", TEXT_INITS, cfg.text_init, "t_init"),
                                     ("speech_le", SPEECH_INITS, cfg.speech_init, "s_init")):
        src = dict(text_src=context) if key == "t_init" else dict(speech_src=audio)
        if (src.get("text_src") or src.get("speech_src")) is None:
            continue
        for init in inits:
            if init == default and row in models:
                out.append({"row": row, "init": init, **test_scores(ctx, *models[row])})
                continue
            trained, why = train(f"init_{row}_{init}", **src, **{key: init})
            out.append({"row": row, "init": init, **(test_scores(ctx, *trained) if trained else {"skipped": why})})
    return out


def attention_example(ctx, model: LEMER, data, context_manifest=None) -> dict:
    """Figure 4 data: for one test utterance (the first with dialog context), the class-averaged
    ``G_t`` per token (with the token strings) and ``G_s`` per frame."""
    from sermo.encoders.registry import text_tokenizer

    ds = data(ctx.tests[0])
    own = ctx.transcripts()
    previous = ctx.transcripts(context_manifest) if context_manifest is not None else {}
    uid = next((u for u in ds.ids if previous.get(u)), ds.ids[0])
    batch, out = next(ctx.forward(model, ds.select([uid]), batch_size=1))
    g_t = out.extras["g_t"][0][out.extras["t_mask"][0]].mean(-1).tolist()
    g_s = out.extras["g_s"][0][out.extras["s_mask"][0]].mean(-1).tolist()
    tok = text_tokenizer(ctx.cfg.data.text_encoder)

    def pieces(text):
        if not text:
            return []
        return tok.convert_ids_to_tokens(tok(str(text).split(), is_split_into_words=True)["input_ids"])

    tokens = pieces(previous.get(uid)) + pieces(own.get(uid))
    return {"id": uid, "transcript": own.get(uid), "context": previous.get(uid),
            "tokens": tokens if len(tokens) == len(g_t) else None, "own_tokens": len(pieces(own.get(uid))),
            "g_t": g_t, "g_s": g_s,
            "frame_seconds": frame_seconds(model.speech.subsample if model.speech is not None else 1, ctx.audio)}


def frame_seconds(subsample: int, src) -> float:
    """Seconds per speech frame of the model: ``subsample`` frames of the encoder in all, of which
    the source averaged ``pool`` (its ``frame_rate`` is the pooled one)."""
    from sermo.nn.layers import frames_left

    return frames_left(subsample, src.input.pool) / (src.frame_rate or 100.0)
