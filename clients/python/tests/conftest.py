"""Runs the real `gleitzeit serve` (API keys required) for the tests."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
from typing import Iterator, List, Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"


def binary() -> str:
    explicit = os.environ.get("GLEITZEIT_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or str(pathlib.Path.home() / ".cache/gleitzeit/target")
    for candidate in (pathlib.Path(target) / "debug/gleitzeit", REPO / "target/debug/gleitzeit"):
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("build the binary first (cargo build -p gleitzeit-cli) or set GLEITZEIT_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: pathlib.Path, port: int, config: Optional[pathlib.Path] = None) -> None:
        self.home = home
        self.port = port
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.process: Optional[subprocess.Popen] = None

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({"GLEITZEIT_HOME": str(self.home), "NO_COLOR": "1", "GLEITZEIT_PORT": "1"})
        for name in ("GLEITZEIT_SERVER", "GLEITZEIT_API_KEY", "GLEITZEIT_CONFIG"):
            env.pop(name, None)
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        extra: List[str] = ["--config", str(self.config)] if self.config else []
        return subprocess.run([binary(), *extra, *args], env=self.env(), capture_output=True, text=True, timeout=60)

    def start(self) -> "Server":
        extra: List[str] = ["--config", str(self.config)] if self.config else []
        self.process = subprocess.Popen(
            [binary(), *extra, "serve", "--port", str(self.port)],
            env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert first.startswith("Gleitzeit server listening"), first
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture()
def home() -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield pathlib.Path(directory)


@pytest.fixture()
def server(home: pathlib.Path) -> Iterator[Server]:
    config = None
    llama = os.environ.get("GLEITZEIT_TEST_LLAMA_URL")
    if llama:
        config = home / "config.yaml"
        config.write_text(
            "llm:\n  default_max_tokens: 24\n  endpoints:\n"
            f"    - {{name: llama, url: '{llama}', kind: openai}}\n"
            "  models:\n    llama3: [gemma3]\n"
        )
    server = Server(home, free_port(), config)
    init = server.cli("--json", "auth", "init")
    assert init.returncode == 0, init.stderr
    server.admin_key = json.loads(init.stdout)["key"]  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()
