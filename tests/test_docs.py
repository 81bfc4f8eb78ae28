"""The README stays true: its set-up commands are CI's, and every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plasticd.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    first_block = readme_lines[readme_lines.index("```bash") + 1 : readme_lines.index("```bash") + 3]
    ci_command = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("./setup.sh")]
    assert len(ci_command) == 1
    assert first_block[1].split("#")[0].strip() == ci_command[0]
    assert first_block[0].startswith("./setup.sh && ")


def test_every_setting_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for section_name, section in Settings.model_fields.items():
        for field_name in section.annotation.model_fields:
            assert f"`{section_name}.{field_name}`" in readme, f"{section_name}.{field_name} is not documented"


# --------------------------------------------------------------- docs/ stay true

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGE = ROOT / "plasticd"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _prose(path: Path) -> str:
    """The Markdown of ``path`` without its fenced code blocks (no links or headings live there)."""
    return re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", _prose(path), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def _code_map() -> str:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    start = text.index("## The tree: the code map")
    return text[start : text.index("\n## ", start + 1)]


def test_the_docs_exist() -> None:
    assert {p.name for p in DOCS} >= {"README.md", "ARCHITECTURE.md", "BENCHMARKS.md"}


def test_the_code_map_names_every_package_and_module() -> None:
    """A module added, moved or renamed without its line in the map fails here."""
    code_map = _code_map()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if path.name == "__init__.py" and rel.parent != Path("."):
            names = [f"`plasticd/{rel.parent.as_posix()}/`"]  # a subpackage is named as its folder
        else:
            names = [f"`plasticd/{rel.as_posix()}`", f"`{rel.as_posix()}`"]
        if not any(name in code_map for name in names):
            missing.append(names[0])
    assert missing == [], f"docs/ARCHITECTURE.md's code map does not name {missing}"


def test_the_code_map_names_nothing_that_is_gone() -> None:
    named = re.findall(r"^\s*\* `([\w/]+(?:\.py|/))`", _code_map(), flags=re.M)  # each entry opens a bullet
    assert len(named) > 40
    gone = [n for n in named if not (ROOT / n if n.startswith("plasticd/") else PACKAGE / n).exists()]
    assert gone == [], f"docs/ARCHITECTURE.md's code map names {gone}, which do not exist"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_an_existing_file_and_heading(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(doc)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert broken == [], f"{doc.name}: broken links {broken}"
