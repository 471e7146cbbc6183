"""The README's Python example runs as written, and its command lines name real subcommands and flags."""
import re
from pathlib import Path

from minclip.cli import build_parser

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_python_example_runs():
    code = re.search(r"```python\n(import numpy as np\n.*?)```", README, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["loss"].item() > 0
    assert all(p.grad is not None for p in scope["model"].parameters())


def test_readme_first_lines_are_the_two_commands():
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].startswith('pip install -e . && minclip train')
    assert block[1].startswith('pip install -e ".[dev]" && pytest')


def test_readme_cli_flags_exist():
    """Every `--flag` in the README's command-line block belongs to the subcommand it is written under."""
    sub = build_parser()._subparsers._group_actions[0].choices
    block = README.split("## Command line", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    checked, known = 0, None
    for line in block.splitlines():
        code = line.split("#", 1)[0]
        m = re.match(r"minclip (\S+)(?: (zeroshot|retrieval|linear-probe|build))?", code)
        if m:  # a new command; indented lines continue the previous one
            parser = sub[m.group(1)]
            if m.group(2):
                parser = parser._subparsers._group_actions[0].choices[m.group(2)]
            known = parser.format_help()
        for flag in re.findall(r"(--[a-z][a-z0-9-]*)", code):
            assert flag in known, f"README names {flag} under a command that has no such flag: {line.strip()}"
            checked += 1
    assert checked > 20


def test_readme_notebook_table_lists_every_notebook_and_its_assignments_exist():
    """The table of the course path names every numbered notebook, and each assignment it says a notebook
    prepares for exists in the course."""
    root = Path(__file__).parent.parent
    notebooks = sorted(p.relative_to(root).as_posix() for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    rows = [line for line in README.splitlines() if re.match(r"\| \d\d \| \[", line)]
    linked = [re.search(r"\]\(([^)]+)\)", row).group(1) for row in rows]
    assert linked == notebooks, f"README's notebook table: {linked}\nnotebooks/: {notebooks}"
    named = {a for row in rows for a in re.findall(r"\ba\d\d\b", row.split("|")[-2])}
    assert len(named) == 10
    for a in named:
        assert (root / "notebooks" / "assignments" / "source" / a / f"{a}.ipynb").exists(), a
