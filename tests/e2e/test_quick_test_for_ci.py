"""ComfyUI's own import check, as the Comfy Registry and CI of ComfyUI forks run it."""
import re
import subprocess

import pytest

from devtools.comfy_host import host_env
from devtools.comfy_server import make_base

pytestmark = pytest.mark.e2e


def test_pack_imports_in_quick_test_for_ci(tmp_path):
    env = host_env()
    base = make_base(tmp_path / "base")
    result = subprocess.run(
        [env["SD35FP8_PYTHON"], "main.py", "--cpu", "--quick-test-for-ci", "--base-directory", str(base),
         "--disable-api-nodes", "--database-url", "sqlite:///:memory:"],
        cwd=env["SD35FP8_COMFYUI"], capture_output=True, text=True, timeout=300)
    # ComfyUI 0.33 prefixes log lines with a coloured "[INFO]" tag
    output = re.sub(r"\x1b\[[\d;]*m", "", result.stdout + result.stderr)
    output = re.sub(r"^\[[A-Z]+\] ", "", output, flags=re.MULTILINE)
    assert result.returncode == 0, output
    assert not re.search(r"IMPORT FAILED.*sd35_fp8|Cannot import .*sd35_fp8", output), output
    # ComfyUI's "Import times for custom nodes" table lists every pack it imported
    assert re.search(r"^\s*[\d.]+ seconds: .*custom_nodes/sd35_fp8$", output, re.MULTILINE), output
