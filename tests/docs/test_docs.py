"""The README and docs/*.md: their Python examples run, and their relative links resolve.

Each page's ```python blocks run as written, in order, in one namespace (like a reader pasting
them into one session), from a directory outside the checkout, so they import the installed
package. Fragments that need a distributed run or a GPU are fenced ```py and are not run here
(tests/kernels/sharded_worker.py exercises the sharded ones)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```[ \t]*$", flags=re.S | re.M)
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
EXTERNAL = ("http://", "https://", "mailto:")


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings (lowercase; punctuation but '-' and '_' dropped;
    spaces become '-'; a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCE.sub("", page.read_text()), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file (or, in a Markdown file, heading anchor) does not exist."""
    bad = []
    for target in LINK.findall(prose(page.read_text())):
        if target.startswith(EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with this anchor in {dest.name}")
    return bad


def test_pages_are_found_and_the_readme_has_examples():
    assert {"README.md", "docs/callbacks.md", "docs/kernels.md", "docs/development.md"} <= {name(p) for p in PAGES}
    assert len(python_blocks(ROOT / "README.md")) >= 4


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_the_link_check_finds_broken_links(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok](there.md#a-heading) [ok](#me) [web](https://example.com/x)\n"
                    "`[code](not-a-link.md)`\n```\n[fenced](not-a-link.md)\n```\n# Me\n"
                    "[gone](missing.md) [bad anchor](there.md#nowhere) ![img](missing.png)\n")
    assert broken_links(page) == ["missing.md: no such file", "there.md#nowhere: no heading with this anchor in there.md",
                                  "missing.png: no such file"]


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=name)
def test_examples_run(page, tmp_path):
    script = tmp_path / (page.stem + "_examples.py")
    script.write_text("\n\n".join(python_blocks(page)))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name(page)}:\n{done.stderr[-3000:]}"
