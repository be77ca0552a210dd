"""The documentation's references hold: every record it cites exists, and every relative link resolves.

The pages checked are README.md, bench/README.md and docs/*.md. Plain text processing only
(no PyTorch), so these run in well under a second.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README_MAX_LINES = 260

# A path under bench/results/: the characters a record's name uses, including * for a glob.
RESULT_PATH = re.compile(r"bench/results/[A-Za-z0-9_.*/-]*")
# A Markdown link [text](target), target without spaces; images ![..](..) match too.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
# A name written in backticks that ends like a record's file name.
JSON_NAME = re.compile(r"`([A-Za-z0-9_./*-]+\.json)`")
SUITE_SENTENCE = re.compile(r"The suite \((?:NNN|\d+) tests[^)]*\) ran in")


def doc_pages() -> list[Path]:
    """README.md, bench/README.md and docs/*.md, the pages these tests cover."""
    return [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def without_code(text: str) -> str:
    """The text with fenced code blocks and inline code removed, where brackets are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown page's headings, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_the_pages_exist():
    """The pages these tests read are there: the README, bench/README.md and at least one page in docs/."""
    missing = [rel(page) for page in doc_pages() if not page.is_file()]
    assert not missing, f"missing pages: {missing}"
    assert len(doc_pages()) > 2, "docs/ holds no .md pages"


def test_every_cited_record_exists():
    """Each bench/results/... path named in the pages is a file or folder that exists; a name with * is a
    glob that matches at least one file. A figure's record cannot be renamed or deleted unnoticed."""
    problems = []
    for page in doc_pages():
        for match in RESULT_PATH.finditer(page.read_text(encoding="utf-8")):
            name = match.group(0).rstrip(".")
            if "*" in name:
                if not any(p.is_file() for p in REPO.glob(name)):
                    problems.append(f"{rel(page)}: {name} matches no file")
            elif not (REPO / name).exists():
                problems.append(f"{rel(page)}: {name} does not exist")
    assert not problems, "\n".join(problems)


def test_the_pages_cite_at_least_one_record_each_where_figures_live():
    """bench/README.md, the home of the measured figures, cites records (the path search above is not empty)."""
    text = (REPO / "bench" / "README.md").read_text(encoding="utf-8")
    assert len(RESULT_PATH.findall(text)) > 10


def test_records_are_named_by_their_full_path():
    """A record's file is always written as bench/results/..., never by its bare name or a path relative to
    bench/results (such as gpu-h100-20261126-s2/sample.json), so that the existence test above sees it."""
    record_names = {p.name for p in RESULTS.rglob("*.json")}
    problems = []
    for page in doc_pages():
        for match in JSON_NAME.finditer(page.read_text(encoding="utf-8")):
            name = match.group(1)
            if name.startswith("bench/results/"):
                continue
            if (RESULTS / name).exists() or ("/" not in name and name in record_names):
                problems.append(f"{rel(page)}: write `{name}` as its full bench/results/... path")
    assert not problems, "\n".join(problems)


def test_every_relative_link_resolves():
    """Each relative Markdown link [text](path) points at a file or folder that exists, and a #fragment on a
    link to a Markdown page names one of that page's headings. Web links and mail links are not followed."""
    problems = []
    for page in doc_pages():
        for match in LINK.finditer(without_code(page.read_text(encoding="utf-8"))):
            target = match.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            path_part, _, fragment = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            if not dest.exists():
                problems.append(f"{rel(page)}: link {target} points at nothing")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                problems.append(f"{rel(page)}: link {target}: no heading #{fragment} in {rel(dest)}")
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_door():
    """README.md stays short (at most 260 lines); the details live in docs/."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_the_suite_is_measured_in_one_place():
    """The test suite's count and time are stated once, in docs/contributing.md, so that no second,
    older measurement can contradict it."""
    places = [rel(page) for page in doc_pages() for _ in SUITE_SENTENCE.finditer(page.read_text(encoding="utf-8"))]
    assert places == ["docs/contributing.md"], f"the suite's count and time are stated in: {places}"
