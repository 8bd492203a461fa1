"""The NVIDIA driver's version, for the benchmarks' records (torch knows the CUDA version, not the driver's)."""
import subprocess
from typing import Optional


def nvidia_driver_version() -> Optional[str]:
    """The first GPU's driver version as nvidia-smi gives it ("580.159.04"), or None where nvidia-smi is absent
    or fails."""
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = found.stdout.strip()
    return version if found.returncode == 0 and version else None
