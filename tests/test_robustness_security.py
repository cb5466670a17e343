"""Nothing executes code from data: no pickle, weights-only torch.load, no np.load with pickles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("backbone", "data", "features", "gates", "replay", "bench", "scripts")


def project_sources() -> list[Path]:
    files = [REPO / "cli.py"]
    for package in PACKAGES:
        files.extend(sorted((REPO / package).rglob("*.py")))
    return [path for path in files if path.is_file()]


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def call_name(node: ast.Call) -> str:
    return ast.unparse(node.func)


def keyword(node: ast.Call, name: str):
    for item in node.keywords:
        if item.arg == name:
            return item.value
    return None


def test_sources_found():
    names = {path.relative_to(REPO).as_posix() for path in project_sources()}
    assert "cli.py" in names
    assert "features/store.py" in names
    assert "gates/io.py" in names


@pytest.mark.parametrize("path", project_sources(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_pickle_import(path):
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            assert module.split(".")[0] not in ("pickle", "cPickle", "dill", "joblib", "cloudpickle"), f"{path}:{node.lineno} imports {module}"


@pytest.mark.parametrize("path", project_sources(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_loads_refuse_pickles(path):
    for node in ast.walk(parsed(path)):
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        if name == "torch.load":
            value = keyword(node, "weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno} torch.load without weights_only=True"
        if name in ("np.load", "numpy.load"):
            value = keyword(node, "allow_pickle")
            assert value is None or (isinstance(value, ast.Constant) and value.value is False), f"{path}:{node.lineno} np.load with allow_pickle"
        if name.endswith("from_pretrained"):
            value = keyword(node, "trust_remote_code")
            assert not (isinstance(value, ast.Constant) and value.value is True), f"{path}:{node.lineno} hard-codes trust_remote_code=True"


def test_trust_remote_code_off_by_default():
    from backbone.loading import load_backbone
    from replay.rundir import RunConfig

    assert RunConfig().trust_remote_code is False
    assert load_backbone.__kwdefaults__["trust_remote_code"] is False
