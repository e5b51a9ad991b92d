"""The documentation: the site builds strictly (every internal link and anchor resolves), its configuration
reference is the one the schema writes, and the README stays a short guide whose links all lead somewhere."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from odeon_job.config import JobConfig
from odeon_job.config.reference import configuration_reference

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "reference" / "configuration.md"


def test_the_configuration_reference_is_the_one_the_schema_writes() -> None:
    assert REFERENCE.read_text() == configuration_reference(), "run make docs to regenerate it"


def test_the_reference_lists_every_key_of_every_section() -> None:
    text = configuration_reference()
    sections = {"": JobConfig} | {
        name: field.annotation
        for name, field in JobConfig.model_fields.items()
        if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields")
    }
    for section, model in sections.items():
        heading = f"## `{section}`" if section else "## Top level"
        assert heading in text
        block = text.split(heading, 1)[1].split("\n## ", 1)[0]
        for key, field in model.model_fields.items():  # type: ignore[union-attr]
            assert f"| `{key}` |" in block, (section, key)
            if field.description:
                assert " ".join(field.description.split())[:40].replace("``", "`") in block.replace("\\|", "|")


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "configuration.html").is_file()  # (offline: plain file URLs)
    walkthrough = (tmp_path / "site" / "getting-started.html").read_text()
    assert "odeon predict --model runs/landcover/first" in walkthrough  # the README's steps, included


def _slug(heading: str) -> str:
    """The anchor GitLab, GitHub and MkDocs give a heading (they agree on these headings)."""
    text = re.sub(r"[^\w\s-]", "", heading.lower()).strip()
    return re.sub(r"[-\s]+", "-", text)


def test_the_readme_is_a_short_guide_whose_links_lead_somewhere() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for sentence in ("make demo", "make test", "## Train on your own data", "docker run --gpus all", "helm install"):
        assert sentence in text
    links = re.findall(r"\]\(([^)#]*)(?:#([^)]*))?\)", text)
    assert len(links) > 10
    for target, anchor in links:
        if target.startswith(("http://", "https://")):
            continue
        path = ROOT / target
        assert path.exists(), target
        if anchor:
            headings = re.findall(r"^#+ (.*)$", path.read_text(), re.M)
            assert anchor in {_slug(h) for h in headings}, (target, anchor)
