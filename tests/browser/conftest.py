"""A JupyterLab server and a headless Chromium for the browser tests.

The server runs from the checkout (so the lessons and exercises are where a learner finds them) on 127.0.0.1, a free
port and a random token, with no network access needed; Chromium is Debian's (`apt-get install chromium`), driven by
Playwright for Python. Without Chromium the tests are skipped with the reason (`make test-browser` installs it as
root)."""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    "Where the screenshots go: $INSTRUCT_COURSE_RUNS/browser (default runs/browser in the checkout)."
    d = Path(os.environ.get("INSTRUCT_COURSE_RUNS", ROOT / "runs")) / "browser"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def lab(shots, tmp_path_factory):
    "A JupyterLab server on the checkout: yields its base URL with the token, and stops it afterwards."
    port, token = _free_port(), secrets.token_hex(16)
    settings = tmp_path_factory.mktemp("lab-settings")  # a fresh workspace; never save into the checkout; no news
    for plugin, value in [
        ("apputils-extension/notification", '{"fetchNews": "false"}'),
        ("docmanager-extension/plugin", '{"autosave": false}'),
    ]:
        f = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(value)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={settings}",
        f"--FileCheckpoints.checkpoint_dir={settings / 'checkpoints'}",  # no .ipynb_checkpoints in the checkout
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI runs as root
        cmd.append("--allow-root")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "HF_HUB_OFFLINE": "1"}
    log = open(shots / "jupyterlab.log", "w")  # the server's own log, for when something goes wrong
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"jupyter lab exited with code {proc.returncode}") from None
                time.sleep(0.5)
        else:
            raise RuntimeError("jupyter lab did not answer within 60 s")
        yield {"base": base, "token": token}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser():
    "Headless Debian Chromium through Playwright; skipped (with the reason) when either is missing."
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip(
            "browser test skipped: Chromium is not installed "
            "(apt-get install chromium; make test-browser does it as root)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test skipped: the playwright package is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()
