"""One flag style (utils.cli): ``--kebab-case`` registered, ``--snake_case`` accepted; every command the README and
the entry points' docstrings show parses, in both spellings, to the same arguments."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from utils import authors, cli

ROOT = Path(__file__).resolve().parents[1]
ENTRY_DIRS = ("metrics", "tools", "bench", "data")
COMMAND = re.compile(r"python (-m [\w.]+|[\w/]+\.py)((?:[^`\n\\]|\\\n)*)")
FLAG = re.compile(r"(?<![-\w])--[a-z0-9][a-z0-9_-]*")


class Parsed(Exception):
    """Raised by the patched parser with the namespace, so no entry point runs past its argument parsing."""

    def __init__(self, namespace: object) -> None:
        super().__init__()
        self.namespace = namespace


def test_kebab_registers_and_snake_is_an_alias() -> None:
    p = cli.ArgumentParser()
    p.add_argument("--lr_dir")
    p.add_argument("--stop-at", type=int)
    p.add_argument("--pred-dir", "-restored_folder")
    p.add_argument("--set", nargs="+", default=[])
    a = p.parse_args(["--lr_dir", "x", "--stop_at=3", "--set", "train.batch_size=2", "-restored_folder", "r"])
    b = p.parse_args(["--lr-dir", "x", "--stop-at", "3", "--set", "train.batch_size=2", "--pred-dir", "r"])
    assert vars(a) == vars(b) == {"lr_dir": "x", "stop_at": 3, "pred_dir": "r", "set": ["train.batch_size=2"]}
    assert "--lr-dir" in p.format_help() and "--lr_dir" not in p.format_help()
    assert cli.kebab("--a_b=c_d") == "--a-b=c_d" and cli.kebab("-a_b") == "-a_b" and cli.kebab("x_y") == "x_y"
    with pytest.raises(SystemExit):
        p.parse_args(["--no-such-flag"])


def _docstring_commands(path: Path) -> list[str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return [m.group(0) for m in COMMAND.finditer(doc)]


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every ``python ...`` command of the README and the entry points' docstrings."""
    lines = (ROOT / "README.md").read_text().splitlines()
    text = "\n".join(" | ".join(line.split(" | ")[1:]) if line.startswith("| ") else line for line in lines)
    text = re.sub(r"`[^`]+`", lambda m: m.group(0).replace("\n", " "), text)  # inline code wrapped over lines
    found = [("README.md", m.group(0)) for m in COMMAND.finditer(text)]  # (tables without the authors' column)
    for path in [
        ROOT / "train.py",
        ROOT / "test.py",
        *(p for d in ENTRY_DIRS for p in sorted((ROOT / d).glob("*.py"))),
    ]:
        found += [(str(path.relative_to(ROOT)), c) for c in _docstring_commands(path)]
    return found


def _script(command: str) -> str | None:
    """The module an entry point's command runs (None: not one of ours, e.g. the authors' psnr_ssim.py)."""
    target = command.split()[1:3]
    name = target[1] if target[0] == "-m" else target[0][: -len(".py")].replace("/", ".")
    path = ROOT / (name.replace(".", "/") + ".py")
    return name if path.is_file() and name.split(".")[0] in ("train", "test", *ENTRY_DIRS) else None


def synopsis_argv(command: str) -> list[str]:
    """A usage line as one concrete argument list: optional parts kept, first of each ``a|b`` alternative,
    ``| --other`` alternatives and ``...`` dropped, placeholders for numbers (N, S, ITER, X ...) set to 2."""
    text = COMMAND.match(command).group(2).replace("\\\n", " ").split("#")[0]
    text = re.sub(r"\s\|\s[^\]]*(?=\])", " ", text)  # [--names a b | --max-images 4] -> [--names a b ]
    text = re.sub(r"(?<=[^\s\[])\|[^\s\]]+", "", text)  # fsr|basicsr -> fsr
    argv: list[str] = []
    for token in text.replace("[", " ").replace("]", " ").split():
        if token.startswith("...") and argv and argv[-1].startswith("--"):
            argv.pop()  # --models ...: a flag whose values are elided
        elif token not in ("...", "|") and not token.startswith("..."):
            argv.append("2" if re.fullmatch(r"N|S|ITER|X|Y|W|H|NGPUS|VERSION", token) else token)
    return argv


def parse(module_name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """The namespace the entry point's parser makes of ``argv`` (its main stops right after parsing)."""
    real = cli.ArgumentParser.parse_known_args

    def stop(self, args=None, namespace=None):
        args = list(args)
        for i in range(1, len(args)):  # an UPPER placeholder of a flag with choices: its first choice
            action = self._option_string_actions.get(cli.kebab(args[i - 1]))
            if args[i].isupper() and action is not None and action.choices:
                args[i] = next(iter(action.choices))
        ns, extra = real(self, args, namespace)
        raise Parsed((vars(ns), extra))

    monkeypatch.setattr(cli.ArgumentParser, "parse_known_args", stop)
    monkeypatch.setattr(sys, "argv", [module_name, *argv])
    if module_name == "test":  # by path: 'import test' may find the standard library's package
        spec = importlib.util.spec_from_file_location("fsr_test_script", ROOT / "test.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    with pytest.raises(Parsed) as parsed:
        module.main(argv)
    return parsed.value.namespace


def _respell(argv: list[str], style: str) -> list[str]:
    def one(token: str) -> str:
        if not token.startswith("--"):
            return token
        name, sep, value = token.partition("=")
        return (name.replace("_", "-") if style == "kebab" else "--" + name[2:].replace("-", "_")) + sep + value

    return [one(t) for t in argv]


AUTHORS_FLAGS = set(authors.TRAIN) | set(authors.TEST)
CASES = [
    (where, cmd)
    for where, cmd in documented_commands()
    # a bare name in prose or 'python test.py ... --flag' is no whole command; the authors' flags are refused
    if _script(cmd)
    and synopsis_argv(cmd)
    and COMMAND.match(cmd).group(2).split()[:1] != ["..."]
    and not (set(FLAG.findall(cmd)) & AUTHORS_FLAGS)
]


def test_the_docs_show_commands_to_check() -> None:
    scripts = {_script(cmd) for _, cmd in CASES}
    assert {"train", "test", "metrics.compare", "metrics.psnr_ssim", "bench.ablations", "data.prepare"} <= scripts
    assert len(CASES) > 30


@pytest.mark.parametrize("where, command", CASES, ids=[f"{w}:{c.split(chr(10))[0][:60]}" for w, c in CASES])
def test_documented_command_parses_in_both_spellings(where: str, command: str, monkeypatch) -> None:
    argv = synopsis_argv(command)
    module = _script(command)
    kebab = parse(module, _respell(argv, "kebab"), monkeypatch)
    snake = parse(module, _respell(argv, "snake"), monkeypatch)
    assert kebab == snake, f"{where}: {command!r}"
    assert kebab[1] == [], f"{where}: {command!r} leaves {kebab[1]} unparsed"
    documented = set(FLAG.findall(command))
    if where != "README.md" or "_" not in "".join(documented):
        return
    shown = {f for f in documented if "_" in f}  # the README shows --snake_case only in RHMC's own commands
    assert command.startswith("python metrics/calculate_"), f"{where}: {command!r} shows {shown}; use --kebab-case"
