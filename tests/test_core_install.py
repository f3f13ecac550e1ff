"""``pip install inference-iface`` without extras: the interface alone (numpy, attrs, cattrs), in a fresh virtual
environment built from this checkout; a backend whose library is absent names the extra to install."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json
import inference_iface
from inference_iface import BackendUnavailableError, create_inference
extras = ("onnxruntime", "tritonclient", "scipy", "torch", "distributed")
missing = [name for name in extras if importlib.util.find_spec(name)]
errors = {}
for backend, options in (("onnxruntime", {"model_path": "model.onnx"}), ("triton", {"model_name": "m"})):
    try:
        create_inference({"backend": backend, **options})
    except BackendUnavailableError as error:
        errors[backend] = str(error)
print(json.dumps({"installed": missing, "errors": errors, "backends": inference_iface.available_backends()}))
"""


@pytest.fixture(scope="module")
def core_python(tmp_path_factory) -> Path:
    """The Python of a new virtual environment holding this project installed without extras (by this environment's
    pip, ``pip --python``: the new one needs no pip of its own, and making one takes longer than the install)."""
    home = tmp_path_factory.mktemp("core_venv")
    venv.EnvBuilder(with_pip=False).create(home)
    python = home / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(ROOT)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert install.returncode == 0, install.stderr
    return python


def test_the_core_install_imports_the_interface_and_names_the_extra_of_a_missing_backend(core_python):
    probe = subprocess.run([str(core_python), "-c", PROBE], capture_output=True, text=True, check=False, cwd="/")
    assert probe.returncode == 0, probe.stderr
    import json

    report = json.loads(probe.stdout)
    assert report["installed"] == [], "the core install pulled in a backend or tracking library"
    assert report["backends"] == ["onnxruntime", "triton"]
    assert "pip install 'inference-iface[onnxruntime]'" in report["errors"]["onnxruntime"]
    assert "pip install 'inference-iface[triton]'" in report["errors"]["triton"]
