"""The docs site builds with `mkdocs build --strict`: a broken link or anchor, or a page left out of the nav, fails
(mkdocs.yml turns each into a warning, --strict turns warnings into a failed build). The links the configs' comments
and the README make into docs/ must resolve too. A few seconds; skipped only where mkdocs is not installed (it is in
the dev extra, so `make test` and CI run it)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC_LINK = re.compile(r"docs/((?:[\w-]+/)*[\w-]+)\.md(?:#([\w-]+))?")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed; it is in the dev extra: pip install -e '.[dev]' (make setup does)",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    return proc, out


def test_mkdocs_build_strict_has_no_warning(site) -> None:
    proc, out = site
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    assert (out / "index.html").is_file() and (out / "reference" / "configuration.html").is_file()


def _unresolved(text: str, source: str, out: Path) -> list[str]:
    """Links ``docs/<page>.md[#anchor]`` in ``text`` whose page or anchor the built site lacks."""
    bad = []
    for page, anchor in DOC_LINK.findall(text):
        html = out / f"{page}.html"  # mkdocs.yml: use_directory_urls false
        if not html.is_file():
            bad.append(f"{source}: docs/{page}.md does not exist")
        elif anchor and f'id="{anchor}"' not in html.read_text(encoding="utf-8"):
            bad.append(f"{source}: docs/{page}.md has no anchor #{anchor}")
    return bad


def test_config_comments_link_existing_doc_anchors(site) -> None:
    proc, out = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    configs = sorted((REPO / "configs").rglob("*.yaml"))
    bad = [msg for path in configs for msg in _unresolved(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)), out)]
    assert not bad, "\n".join(bad)


def test_readme_links_into_docs_resolve(site) -> None:
    proc, out = site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert DOC_LINK.search(readme), "the README should link into docs/"
    bad = _unresolved(readme, "README.md", out)
    assert not bad, "\n".join(bad)
