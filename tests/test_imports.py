"""The layering the system contract promises, checked on the source: systems import the contract,
``sermo.nn``, ``sermo.encoders``, ``sermo.data`` and ``sermo.evaluation`` only; the engine never
imports the serving side."""

import ast
from pathlib import Path

import sermo

ROOT = Path(sermo.__file__).parent


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports, at the top or inside functions (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def offenders(folder: str, forbidden: tuple[str, ...], root: Path = ROOT) -> dict[str, list[str]]:
    out = {}
    for path in sorted((root / folder).rglob("*.py")):
        bad = sorted(m for m in imports_of(path, root) if m.startswith(forbidden))
        if bad:
            out[str(path.relative_to(root))] = bad
    return out


def test_systems_import_only_the_contract_and_the_lower_layers():
    assert offenders("systems", ("sermo.training", "sermo.features", "sermo.serving")) == {}


def test_the_engine_does_not_import_serving():
    assert offenders("training", ("sermo.serving",)) == {}


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    root = tmp_path / "sermo"
    (root / "systems" / "x").mkdir(parents=True)
    (root / "systems" / "x" / "a.py").write_text("def f():\n    from sermo.training.fold import FoldRun\n")
    (root / "systems" / "x" / "b.py").write_text("from ...serving import predictor\nimport sermo.features.store\n")
    assert offenders("systems", ("sermo.training", "sermo.serving", "sermo.features"), root) == {
        "systems/x/a.py": ["sermo.training.fold", "sermo.training.fold.FoldRun"],
        "systems/x/b.py": ["sermo.features.store", "sermo.serving", "sermo.serving.predictor"]}


def test_no_source_file_is_long_without_a_stated_reason():
    long = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
            if len(p.read_text().splitlines()) > 420 and "Long file:" not in p.read_text()[:3000]]
    assert long == []


def test_the_cli_lists_the_same_systems_as_the_registry_without_importing_them():
    # sermo.cli_args keeps its own copy of the shared modules' names (to stay free of torch)
    from sermo.cli_args import system_names
    from sermo.systems import available

    assert system_names() == available() and "linear_probe" not in available() and "baselines" in available()
