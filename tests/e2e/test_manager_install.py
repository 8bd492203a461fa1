"""Installing the pack the way ComfyUI-Manager's "Install via Git URL" does, into a fresh ComfyUI.

cm-cli (PyPI comfyui-manager, the Manager's own install code without its UI) clones the pack from a git
URL, installs requirements.txt with ComfyUI's Python, and at ComfyUI's next start the pack's nodes and
workflows are there with no import error. The URL serves, over dumb HTTP on 127.0.0.1, a repository of
this checkout's files (what git tracks or would track, committed or not): the code under test.
"""
import functools
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from devtools.comfy_host import REPO, host_env
from devtools.comfy_server import ComfyServer

pytestmark = pytest.mark.e2e

USER_FOLDERS = ("user", "output", "input", "temp")
REPOSITORY_NAME = "sd35-fp8"  # cm-cli names the folder in custom_nodes after the URL's last part


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def pack_url(tmp_path):
    files = [name for name in git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).split("\0")
             if name and (REPO / name).is_file()]
    source = tmp_path / "source"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    git("init", "-q", "-b", "main", cwd=source)
    git("add", "-A", cwd=source)
    git("-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", "checkout under test", cwd=source)
    served = tmp_path / "served"
    git("clone", "-q", "--bare", str(source), str(served / f"{REPOSITORY_NAME}.git"), cwd=tmp_path)
    git("update-server-info", cwd=served / f"{REPOSITORY_NAME}.git")  # what a dumb-HTTP client reads first

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{REPOSITORY_NAME}.git"
    server.shutdown()
    thread.join()


@pytest.fixture
def fresh_comfyui(tmp_path):
    """A copy of the host's ComfyUI tree, without this pack."""
    env = host_env()
    source, comfyui = Path(env["SD35FP8_COMFYUI"]), tmp_path / "ComfyUI"

    def left_out(folder, names):  # the user's own folders, and caches at any depth
        return [n for n in names if n == "__pycache__" or (Path(folder) == source and n in USER_FOLDERS)]
    shutil.copytree(source, comfyui, ignore=left_out)
    return Path(env["SD35FP8_PYTHON"]), comfyui


def pack_nodes(object_info, folder):
    return sorted(name for name, info in object_info.items() if info["python_module"] == f"custom_nodes.{folder}")


def test_cm_cli_installs_the_pack_from_a_git_url_and_comfyui_loads_it(comfy, pack_url, fresh_comfyui, tmp_path):
    python, comfyui = fresh_comfyui
    # COLUMNS: cm-cli prints through rich, which would wrap the pip command lines checked below
    env = {**os.environ, "COMFYUI_PATH": str(comfyui), "HOME": str(tmp_path / "home"), "COLUMNS": "500"}
    result = subprocess.run([str(python.parent / "cm-cli"), "install", pack_url, "--exit-on-fail"], env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and f"[INSTALLED] {pack_url}" in output, output
    installed = comfyui / "custom_nodes" / REPOSITORY_NAME
    assert (installed / "__init__.py").is_file() and (installed / ".git").is_dir()
    for requirement in (REPO / "requirements.txt").read_text().split():
        assert f"'pip', 'install', '{requirement}'" in output, f"requirements.txt's {requirement} was not installed"

    server = ComfyServer(python, comfyui, comfyui, tmp_path / "server.log")
    server.start()
    try:
        object_info = server.get("/object_info")
        templates = server.get("/api/workflow_templates")
    finally:
        server.stop()
    # "   0.1 seconds (IMPORT FAILED): .../custom_nodes/sd35-fp8" when the import fails
    [import_line] = [line for line in server.log_path.read_text().splitlines()
                     if line.endswith(f"custom_nodes/{REPOSITORY_NAME}")]
    assert "IMPORT FAILED" not in import_line, server.log_tail()
    assert pack_nodes(object_info, REPOSITORY_NAME) == pack_nodes(comfy.get("/object_info"), "sd35_fp8") != []
    assert sorted(templates[REPOSITORY_NAME]) == sorted(path.stem for path in (REPO / "workflows").glob("*.json"))
