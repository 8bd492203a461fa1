"""The pack as the Comfy Registry and ComfyUI-Manager read it: pyproject.toml (checked by comfy-cli's own
`comfy node validate`), LICENSE, the icon, requirements.txt; optimum-quanto imported only where a
quanto file is read."""
import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from devtools.comfy_host import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
REQUIREMENTS = (REPO / "requirements.txt").read_text().split()


def test_comfy_node_validate_passes(tmp_path):
    comfy = Path(sys.executable).parent / "comfy"  # comfy-cli, from requirements-test.txt
    result = subprocess.run([str(comfy), "node", "validate"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HOME": str(tmp_path), "DO_NOT_TRACK": "1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "All validation checks passed successfully" in output, output
    assert "Warning" not in output, output  # comfy-cli warns, exit code 0, about fields it then leaves out


def test_licence_is_the_gpl_v3_that_pyproject_names():
    assert PYPROJECT["project"]["license"] == {"file": "LICENSE"}
    assert "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)" in PYPROJECT["project"]["classifiers"]
    text = (REPO / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text and "END OF TERMS AND CONDITIONS" in text


def test_registry_fields_are_complete():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    tracked = set(subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split())
    assert comfy["Icon"] in tracked, "the icon must be a file in the repository"
    assert all((REPO / folder).is_dir() for folder in comfy["includes"])


def test_requirements_pin_nothing_exactly_and_match_pyproject():
    assert REQUIREMENTS == PYPROJECT["project"]["dependencies"]
    assert not [r for r in REQUIREMENTS if "==" in r or r.split(">")[0].split("=")[0] in ("torch", "torchvision")]


def optimum_imports(path):
    """For each import of optimum in the file: whether it runs only when a function is called."""
    tree = ast.parse(path.read_text())
    in_functions = {id(inner) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for inner in ast.walk(node)}
    return [id(node) in in_functions for node in ast.walk(tree)
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "optimum" for a in node.names)
            or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optimum"]


def test_optimum_quanto_is_imported_only_when_a_quanto_file_is_read():
    pack_code = [REPO / "__init__.py", *sorted((REPO / "quant").rglob("*.py")), *sorted((REPO / "nodes").rglob("*.py"))]
    importers = {str(path.relative_to(REPO)): optimum_imports(path) for path in pack_code}
    assert {name: found for name, found in importers.items() if found} == {"quant/files/formats/quanto.py": [True]}
