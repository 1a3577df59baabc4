"""The pure-PyTorch core runs without Ray: only raygr/distributed/ may import it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "raygr"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_distributed_package_imports_ray():
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(m for m in imported_modules(path)
                                                      if m == "ray" or m.startswith("ray."))
        for path in PACKAGE.rglob("*.py") if "distributed" not in path.relative_to(PACKAGE).parts
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"ray imported outside raygr/distributed/: {offenders}"
    assert imported_modules(PACKAGE / "distributed" / "train.py") & {"ray", "ray.train"}, "the check finds imports"


def test_models_import_nothing_from_training_or_data():
    """The model package is the pure core: batch types live with it, and building a model from a dataset
    (raygr/training/factory.py) is the training package's job."""
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(m for m in imported_modules(path)
                                                      if m.startswith(("raygr.training", "raygr.data")))
        for path in (PACKAGE / "models").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"raygr/models imports training/ or data/: {offenders}"
