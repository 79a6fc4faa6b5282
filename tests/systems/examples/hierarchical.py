"""Contract examples of hierarchical: tiny configs of each kind of row it has (``tests/systems/contract.py``)."""

from __future__ import annotations

from tests.systems.contract import Example, feats, spec



def examples(enc: dict[str, str]) -> list[Example]:
    from sermo.systems.hierarchical import ROWS, HierarchicalConfig as Cfg

    cfg = Cfg(conformer_layers=1, hidden=8, heads=2, kernel=3, mlp=[8, 4])
    a = feats(2, 6)
    # a Table 2 row is named after its label combination; its bundle records the model it is
    return [Example(row, cfg, spec(audio=a)) for row in ROWS] \
        + [Example("t7_iemocap-cont_msp-disc_hier_cd", cfg, spec(audio=a, options={"architecture": "hier_cd"}))]
