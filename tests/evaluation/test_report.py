"""REPORT.md's deviations: what applies to the run's profile and corpora, and what it overrode."""

from sermo.config import load_recipe
from sermo.evaluation.report import _deviations
from sermo.systems import get_system


def test_a_paper_run_with_overrides_lists_what_actually_ran():
    # a paper profile run with train.epochs=1 must not read as the paper's 50 epochs
    sysdef = get_system("hierarchical")
    cfg = load_recipe("hierarchical", "paper", sysdef.config_cls, ["train.epochs=1", "model.hidden=16"],
                      path=sysdef.recipe_path)
    text = _deviations(sysdef, cfg, ["iemocap"])
    assert "overrode its `paper` profile" in text
    assert "| train.epochs | 1 | 50 |" in text and "| model.hidden | 16 | 64 |" in text
    plain = _deviations(sysdef, load_recipe("hierarchical", "paper", sysdef.config_cls, path=sysdef.recipe_path),
                        ["iemocap"])
    assert "overrode" not in plain


def test_deviations_follow_the_corpus_and_the_run_settings():
    sysdef = get_system("hierarchical")
    cfg = load_recipe("hierarchical", "paper", sysdef.config_cls, path=sysdef.recipe_path)
    iemocap, msp = _deviations(sysdef, cfg, ["iemocap"]), _deviations(sysdef, cfg, ["msp-podcast"])
    assert "iemocap-loso-holdout" in iemocap and "iemocap-loso-holdout" not in msp  # an IEMOCAP-only note
    assert "clipped at 1" in iemocap
    unclipped = load_recipe("hierarchical", "paper", sysdef.config_cls, ["train.grad_clip=null"],
                            path=sysdef.recipe_path)
    assert "clipped at" not in _deviations(sysdef, unclipped, ["iemocap"])


def test_the_table_says_how_many_test_utterances_each_row_was_scored_on():
    from sermo.evaluation.report import results_table

    rows = [{"name": "audio", "modalities": ["audio"], "trainable_params": 10, "mean": {"ua": 0.5}, "std": {},
             "utterances": 120, "ids_digest": "aaa"},
            {"name": "text", "modalities": ["text"], "trainable_params": 10, "mean": {"ua": 0.6}, "std": {},
             "utterances": 111, "ids_digest": "bbb"},
            {"name": "fusion", "modalities": ["audio", "text"], "trainable_params": 0, "mean": {"ua": 0.7},
             "std": {}, "utterances": 120, "ids_digest": "aaa"}]
    table = results_table(rows)
    assert "| test utts |" in table and "| 111 |" in table
    assert "text on 111 (the other rows on 120)" in table
    same = results_table([rows[0], rows[2]])
    assert "Not every row" not in same
