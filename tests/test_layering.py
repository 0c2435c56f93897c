"""Imports point down (utils <- data / model / metrics <- train.py, test.py <- bench, tools) and sit at module top
unless a comment on the import (or the line above) says why it is lazy."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ("train", "test", "bench", "tools")
FORBIDDEN = {  # package -> project modules it must not import (a name covers its submodules)
    "utils": ("data", "model", "metrics", *ENTRY),
    "data": ("utils.config", "model", "metrics", *ENTRY),
    "model": ("data", "metrics", *ENTRY),
    "metrics": ENTRY,
}


def _sources() -> list[Path]:
    skip = {".venv", "tests", "experiments"}
    return [p for p in sorted(ROOT.rglob("*.py")) if not skip & set(p.relative_to(ROOT).parts)]


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str, bool]]:
    """(node, module, lazy) for every import; lazy: inside a function or class, or under ``if __name__``."""
    found = []

    def walk(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((child, alias.name, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((child, child.module, lazy))
            main_block = isinstance(child, ast.If) and "__name__" in ast.unparse(child.test)
            walk(child, lazy or main_block or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    walk(tree, False)
    return found


def _covers(module: str, names: tuple[str, ...]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def test_packages_import_only_downward() -> None:
    wrong = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        forbidden = FORBIDDEN.get(rel.parts[0], ())
        for node, module, _ in _imports(ast.parse(path.read_text())):
            if _covers(module, forbidden):
                wrong.append(f"{rel}:{node.lineno} imports {module}")
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_lazy_imports_say_why() -> None:
    silent = []
    for path in _sources():
        lines = path.read_text().splitlines()
        for node, module, lazy in _imports(ast.parse("\n".join(lines))):
            if not lazy:
                continue
            line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            comment = line.split("#", 1)[1] if "#" in line else above[1:] if above.startswith("#") else ""
            if not re.sub(r"^\s*noqa(: [A-Z0-9, ]+)?", "", comment).strip():
                silent.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module} inside a function")
    assert not silent, "lazy imports without a reason (move them to the top or say why):\n" + "\n".join(silent)


def test_import_graph_at_run_time() -> None:
    """In a fresh interpreter: data pulls in neither model nor utils.config, utils.config pulls in neither model nor
    data; the entry point (train) fills the registries the config schema reads, so a bad name fails at load."""
    code = """
import sys
def loaded(*names):
    return sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
import data
assert not loaded("model", "utils.config", "metrics"), loaded("model", "utils.config", "metrics")
import utils.config
assert not loaded("model", "metrics"), loaded("model", "metrics")
import train
from utils.config import ConfigError, resolve_config
bad = {"data.train.type": "folder", "data.val.fit": "pad", "ssm.backend": "cuda", "model.name": "nonet",
       "train.scheduler.type": "step"}
for key, value in bad.items():
    try:
        resolve_config(None, [f"{key}={value}"])
    except ConfigError as err:
        assert key in str(err) and value in str(err), err
    else:
        raise AssertionError(f"{key}={value} was accepted")
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
