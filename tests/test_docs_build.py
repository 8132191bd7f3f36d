"""The strict docs build is a check that can fail: a broken link makes it exit non-zero."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MKDOCS = pathlib.Path(sys.executable).with_name("mkdocs")


def _build(tmp_path, extra_markdown):
    for name in ("keras_wtrain", "examples", "benchmarks", "README.md"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    with open(tmp_path / "docs" / "index.md", "a") as page:
        page.write(extra_markdown)
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is installed with the [docs] extra")
def test_strict_build_fails_on_a_broken_link(tmp_path):
    result = _build(tmp_path, "\n[a broken link](no-such-page.md)\n")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "no-such-page.md" in result.stdout + result.stderr


@pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is installed with the [docs] extra")
def test_strict_build_passes_without_the_broken_link(tmp_path):
    result = _build(tmp_path, "\n")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_builds_the_docs_without_hiding_warnings():
    ci = (ROOT / ".ci" / "run").read_text()
    line = next(part for part in ci.split("&&") if "mkdocs build" in part)
    assert "--strict" in line and " -q" not in line, line
