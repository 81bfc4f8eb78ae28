"""The README stays true: its set-up commands are CI's, and every setting is documented."""

from __future__ import annotations

from pathlib import Path

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
