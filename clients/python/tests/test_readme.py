"""Every Python example in the client's README runs against the real server."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import REPO, Server

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_the_seed_examples() -> None:
    text = README.read_text()
    for title in ("Basic workflow with authentication", "Batch processing", "Multi-endpoint LLMs"):
        assert title in text
    assert len(BLOCKS) >= 4


@pytest.mark.skipif(not os.environ.get("GLEITZEIT_TEST_LLAMA_URL"), reason="the examples call a real model")
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(server: Server, index: int) -> None:
    env = dict(os.environ)
    env["GLEITZEIT_SERVER"] = server.url
    env["GLEITZEIT_API_KEY"] = server.admin_key  # type: ignore[attr-defined]
    env["PYTHONPATH"] = str(README.parent)
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"example {index} failed:\n{result.stdout}\n{result.stderr}"
