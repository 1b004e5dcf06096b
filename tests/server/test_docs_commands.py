"""The README's run command, verbatim, on a "fresh machine": a copy of the checkout
and an empty virtual environment, with nothing of the test run's Python around.
Then every block of README.md and docs/ marked ``<!-- run -->`` runs against it, in
that environment, and prints what the block says it prints (docs/testing.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests
from conftest import listening_socket, port_of, require_tool, which
from support.deploy import assert_installed_from_wheel, copy_checkout, user_env
from support.docs import Transcript, recipe, shell_blocks

pytestmark = pytest.mark.e2e

RUN_BLOCKS = [block for block in shell_blocks() if block.marker == "run"]
#: The address the docs show: gunicorn's default, which the test server replaces.
DOCUMENTED_ADDRESS = "127.0.0.1:8000"


@dataclass
class FreshCheckout:
    checkout: Path
    venv: Path
    env: dict[str, str]
    port: int


def wait_until_serving(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until the endpoint answers: the command first installs, then starts gunicorn."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run command exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            answer = requests.options(f"http://127.0.0.1:{port}/files/", timeout=2)
            if answer.status_code == 200:  # tus discovery (tusd answers 200 too)
                return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered after {timeout}s:\n{log.read_text()[-4000:]}")


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to bash, gunicorn and its workers; wait until every one has gone."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Iterator[FreshCheckout]:
    (step,) = recipe("run")
    assert step.command == "pip install . && gunicorn tuswsgi:app"
    root = tmp_path_factory.mktemp("fresh")
    checkout = copy_checkout(root / "checkout")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = user_env(venv / "bin")  # as after `. venv/bin/activate`
    listener = listening_socket()
    port = port_of(listener)
    log = root / "run.log"
    with listener, open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", step.command], cwd=checkout, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                pass_fds=(listener.fileno(),),
                                env={**env, "TUSWSGI_BIND": f"fd://{listener.fileno()}"})
    try:
        wait_until_serving(port, proc, log, timeout=600)
        yield FreshCheckout(checkout, venv, env, port)
    finally:
        stop_group(proc)


def test_the_run_command_installs_this_project_and_serves(fresh):
    assert_installed_from_wheel(fresh.venv / "bin" / "python", fresh.venv)
    discovery = requests.options(f"http://127.0.0.1:{fresh.port}/files/", timeout=10)
    assert discovery.headers["Tus-Version"] == "1.0.0"
    # the checkout's ./gunicorn.conf.py: tuswsgi's worker, many clients at once
    log = (fresh.checkout.parent / "run.log").read_text()
    assert "Using worker: TusWorker" in log
    # and the upload page, which only the zero-configuration run serves
    assert requests.get(f"http://127.0.0.1:{fresh.port}/", timeout=10).status_code == 200


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[block.where for block in RUN_BLOCKS])
def test_run_block(fresh, block, tmp_path):
    require_tool("curl", which("curl") is not None)
    Transcript(tmp_path, fresh.env, {DOCUMENTED_ADDRESS: f"127.0.0.1:{fresh.port}"}).run(block.text)


def test_the_blocks_ran_are_the_documented_ones():
    """The README's walk-through, the configuration check and the CLI's help at least."""
    where = {block.path.name for block in RUN_BLOCKS}
    assert {"README.md", "configuration.md", "cli.md"} <= where
    walkthrough = next(block for block in RUN_BLOCKS if block.path.name == "README.md")
    assert DOCUMENTED_ADDRESS in walkthrough.text and "curl" in walkthrough.text
