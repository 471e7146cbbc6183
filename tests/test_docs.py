"""The docs hold together: every relative link in README.md and docs/*.md resolves, and every module of
the package is named in docs/architecture.md (so the module map cannot fall behind the code)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
# Pages written on other branches of issue 11. A link to one of them is accepted only while the file
# does not exist yet; once it exists it is checked like any other (and this set can be emptied).
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(path):
    """(target path relative to the repo root, line number) of every relative link in a markdown file."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)  # code is not links
    for lineno, line in enumerate(text.splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http:, https:, mailto:, in-page anchors
            file_part = target.split("#", 1)[0]
            resolved = (path.parent / file_part).resolve()
            yield resolved.relative_to(ROOT.resolve()).as_posix() if resolved.is_relative_to(ROOT.resolve()) \
                else str(resolved), lineno


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    broken = [f"{doc.relative_to(ROOT)}:{n}: {t}" for t, n in relative_links(doc)
              if not (ROOT / t).exists()]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_link_checker_finds_a_broken_link():
    """The checker itself can fail: a link to a missing file is reported; web links, anchors and code are not."""
    page = ROOT / "docs" / ".linkcheck-selftest.md"
    page.write_text("[ok](https://example.com) [bad](no-such-file.md) [anchor](#x) [up](../README.md#top)\n"
                    "```\n[in code](missing.md)\n```\n")
    try:
        links = [t for t, _ in relative_links(page)]
    finally:
        page.unlink()
    assert links == ["docs/no-such-file.md", "README.md"]


def test_every_module_is_in_architecture_md():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "minclip").rglob("*.py"))
    assert modules
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"docs/architecture.md does not name these modules (write them as `path`): {missing}"


def test_every_notebook_is_linked_from_the_index():
    index = {t for t, _ in relative_links(ROOT / "docs" / "index.md")}
    notebooks = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [n for n in notebooks if n not in index]
    assert not missing, f"docs/index.md does not link these notebooks: {missing}"
