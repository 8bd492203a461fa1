"""devtools/gpu_driver.py: the driver version the benchmarks record, from the nvidia-smi found on PATH."""
import os
import stat

from devtools.gpu_driver import nvidia_driver_version


def _nvidia_smi(directory, script):
    path = directory / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(directory)


def test_reads_the_version_nvidia_smi_prints(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _nvidia_smi(tmp_path, 'echo "580.159.04"\n') + os.pathsep + os.environ["PATH"])
    assert nvidia_driver_version() == "580.159.04"


def test_none_when_nvidia_smi_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _nvidia_smi(tmp_path, 'echo "NVIDIA-SMI has failed"; exit 9\n') + os.pathsep
                       + os.environ["PATH"])
    assert nvidia_driver_version() is None


def test_none_without_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert nvidia_driver_version() is None
