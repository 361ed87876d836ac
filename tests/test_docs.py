"""The Markdown documents: every relative link points to a file that exists, and every
#anchor to a heading of the file it names (GitHub's heading slugs)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
DOCUMENTS = sorted(
    [REPO / "README.md", *(REPO / "docs").glob("*.md"), *REPO.glob("*/README.md")]
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated slug gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    """The relative links of a Markdown file whose target file or anchor does not exist."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text()))
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with this anchor")
    return bad


def test_slug_follows_github():
    assert slug("Mixed precision (`model.dtype = \"float32\"`)") == "mixed-precision-modeldtype--float32"
    assert slug("Moire electrons at nu = 2/3") == "moire-electrons-at-nu--23"
    assert slug("GPU readiness: `bench/gpu_check.sh`") == "gpu-readiness-benchgpu_checksh"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## Part two\n")
    (tmp_path / "b.md").write_text(
        "[ok](a.md#part-two) [file](missing.md) [anchor](a.md#part-three) [self](#nowhere)\n"
        "`[code](missing.md)` [web](https://example.org/x)\n"
    )
    assert broken_links(tmp_path / "b.md") == [
        "missing.md: no such file",
        "a.md#part-three: no heading with this anchor",
        "#nowhere: no heading with this anchor",
    ]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(document):
    assert broken_links(document) == []
