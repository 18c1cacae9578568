"""Dependencies point one way, and the repository stands alone.

Layers, bottom to top (a package may import its own layer and those below it):

    models -> pairing -> actors -> learner -> rewards -> evaluation -> deploy

``models`` is the network and the shared vocabulary (tasks, config machinery); ``pairing``
builds data; ``actors`` runs rollouts and moves weights; ``learner`` trains; ``rewards``
scores (its DSR endpoint loads weights as the actors do); ``evaluation`` measures a policy
(held-out, benchmarks, the lmms-eval plugin); ``deploy`` is the driver and the CLI. Imports inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("models", "pairing", "actors", "learner", "rewards", "evaluation", "deploy")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def test_no_package_imports_a_layer_above_it():
    rank = {p: i for i, p in enumerate(LAYERS)}
    bad = []
    for pkg in LAYERS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for line, top in _imports(path):
                if top in rank and rank[top] > rank[pkg]:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {top} (above {pkg})")
    assert not bad, "\n".join(bad)


def test_the_layering_check_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from deploy.config import load_config\n    import rewards.x\n")
    assert _imports(f) == [(2, "deploy"), (3, "rewards")]


def _family_reach_ins(path: Path) -> list[str]:
    """Where ``path`` reaches past the model interface: a ``.hf`` / ``.processor`` attribute,
    a name that starts with ``Janus``, or an import of ``models.unified`` (the Janus family's
    module; its published loaders come through ``models`` or ``models.registry``)."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("hf", "processor"):
            out.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id.startswith("Janus"):
            out.append(f"{node.lineno}: {node.id}")
        elif isinstance(node, ast.alias) and node.name.startswith("Janus"):
            out.append(f"{node.lineno}: imports {node.name}")
        elif isinstance(node, ast.ImportFrom) and node.module == "models.unified":
            out.append(f"{node.lineno}: imports from models.unified")
    return out


def test_nothing_outside_models_reaches_into_a_model_family():
    # The learner, the workers, the reward endpoints and the driver hold a policy only
    # through models.interface.UnifiedPolicy, so a second family (model.arch) changes none
    # of them. (bench/ measures Janus itself and may look inside.)
    bad = []
    for pkg in LAYERS[1:]:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            bad += [f"{path.relative_to(ROOT)}:{hit}" for hit in _family_reach_ins(path)]
    assert not bad, "\n".join(bad)


def test_the_reach_in_check_sees_attributes_names_and_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "from models.unified import x\n"
        "from transformers import JanusProcessor\n"
        "def f(m):\n    m.hf.eval()\n    return JanusConfig\n"
    )
    hits = _family_reach_ins(f)
    assert sorted(hits) == sorted(
        [
            "1: imports from models.unified",
            "2: imports JanusProcessor",
            "4: .hf",
            "5: JanusConfig",
        ]
    )


def test_no_tracked_file_points_outside_the_repository():
    # A user's clone holds only this repository: no doc, docstring or Makefile may send
    # them to a sibling directory (the project's planning files live outside it).
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    needle = "../" + "shared"
    bad = []
    for name in files:
        path = ROOT / name
        if path.suffix in (".png", ".parquet", ".pt", ".safetensors") or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        bad += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert not bad, bad


def test_reading_a_config_imports_no_model_library():
    # `pairuni config keys`, a driver on a CPU-only head and every endpoint declaration read
    # configs; none of them may pay for torch / transformers / open_clip (seconds each).
    import sys

    code = (
        "import sys, deploy.config, rewards.spec; rewards.spec.endpoints(); "
        "print(sorted(m for m in ('torch', 'transformers', 'open_clip', 'ray') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]", out
