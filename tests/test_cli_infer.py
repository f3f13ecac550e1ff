"""``trkx info`` and ``trkx infer`` on real model files, in-process and as a real console-script subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx_models
import onnxruntime as ort

from tracking_algs.cli import main

_SCRIPT = Path(sys.executable).with_name("trkx")
#: The installed console script, or the module when the project is used from a checkout without installing.
TRKX = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tracking_algs.cli"]


def test_info_prints_the_signature(two_in_two_out_path, capsys):
    assert main(["info", str(two_in_two_out_path), "-O", "device=cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("onnxruntime ")
    assert str(two_in_two_out_path) in lines[0]
    assert lines[1:] == [
        "inputs:",
        "  input.1  float32  [?, 3]  field input_1",
        "  y:0      float32  [?, 3]  field y_0",
        "outputs:",
        "  sum     float32  [?, 3]  field sum",
        "  prod:0  float32  [?, 3]  field prod_0",
    ]


def test_infer_writes_npz_keyed_by_tensor_name(model_dir, tmp_path, capsys):
    model = onnx_models.mixed_dtypes_model(model_dir)
    inputs = {
        "hits/x": np.arange(12, dtype=np.float32).reshape(4, 3),
        "ids": np.array([3, -1, 7], dtype=np.int64),
        "mask": np.array([True, False, True]),
    }
    argv = ["infer", str(model), "--output", str(tmp_path / "out" / "result.npz")]
    for index, (name, array) in enumerate(inputs.items()):
        np.save(tmp_path / f"in{index}.npy", array)
        argv += ["--input", f"{name}={tmp_path / f'in{index}.npy'}"]
    assert main(argv) == 0
    assert "result.npz" in capsys.readouterr().out
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, inputs)
    with np.load(tmp_path / "out" / "result.npz", allow_pickle=False) as saved:
        assert list(saved.keys()) == ["scaled", "ids+1", "not mask"]
        for name, expected in zip(saved.keys(), want, strict=True):
            assert saved[name].dtype == expected.dtype
            np.testing.assert_array_equal(saved[name], expected)


def test_infer_output_subset_and_string_outputs(model_dir, two_in_two_out_path, tmp_path):
    np.save(tmp_path / "x.npy", np.full((2, 3), 3.0, np.float32))
    out = tmp_path / "subset.npz"
    inputs = ["-i", f"input.1={tmp_path / 'x.npy'}", "-i", f"y:0={tmp_path / 'x.npy'}"]
    assert main(["infer", str(two_in_two_out_path), *inputs, "-o", str(out), "--outputs", "prod:0"]) == 0
    with np.load(out, allow_pickle=False) as saved:
        assert list(saved.keys()) == ["prod:0"]
        np.testing.assert_array_equal(saved["prod:0"], np.full((2, 3), 9.0, np.float32))
    model = onnx_models.identity_model(model_dir, "bytes")
    np.save(tmp_path / "text.npy", np.array([["a", "é"], ["", "xyz"]]))
    out = tmp_path / "text.npz"
    assert main(["infer", str(model), "-i", f"in.0={tmp_path / 'text.npy'}", "-o", str(out), "--outputs", "out:0"]) == 0
    with np.load(out, allow_pickle=False) as saved:
        assert saved["out:0"].tolist() == [["a", "é"], ["", "xyz"]]


def test_infer_errors_are_one_line_and_exit_2(two_in_two_out_path, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float64))
    argv = ["infer", str(two_in_two_out_path), "-i", f"input.1={tmp_path / 'x.npy'}", "-o", str(tmp_path / "o.npz")]
    assert main([*argv, "-i", f"y:0={tmp_path / 'x.npy'}"]) == 2
    assert "input 'input.1': expected dtype float32, got float64" in capsys.readouterr().err
    assert main([*argv, "-i", f"y:0={tmp_path / 'x.npy'}", "-O", "cast_policy=same_kind"]) == 0  # the option fixes it
    assert main([*argv, "-i", f"y:0={tmp_path / 'absent.npy'}"]) == 2
    assert "input 'y:0': cannot read" in capsys.readouterr().err
    assert main([*argv]) == 2
    assert "missing input(s) 'y:0'" in capsys.readouterr().err
    assert main([*argv, "-i", "y:0"]) == 2
    assert "must look like NAME=FILE.npy" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "absent.onnx")]) == 2
    assert "absent.onnx' does not exist" in capsys.readouterr().err
    assert main(["info", str(two_in_two_out_path), "-O", "threads=2"]) == 2
    assert "unknown key(s) threads; valid keys are" in capsys.readouterr().err


def test_infer_refuses_an_empty_npy_file_and_an_input_given_twice(two_in_two_out_path, tmp_path, capsys):
    """An empty ``.npy`` file, and one input given twice, are each one line naming the input, status 2, and nothing
    written."""
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    (tmp_path / "empty.npy").write_bytes(b"")
    out = tmp_path / "o.npz"
    argv = ["infer", str(two_in_two_out_path), "-i", f"input.1={tmp_path / 'x.npy'}", "-o", str(out)]
    assert main([*argv, "-i", f"y:0={tmp_path / 'empty.npy'}"]) == 2
    assert f"input 'y:0': cannot read '{tmp_path / 'empty.npy'}' as a .npy array" in _error_line(capsys, "infer")
    assert main([*argv, "-i", f"y:0={tmp_path / 'x.npy'}", "-i", f"input.1={tmp_path / 'x.npy'}"]) == 2
    assert "input 'input.1' is given twice; give each input once" in _error_line(capsys, "infer")
    assert not out.exists()
    result = subprocess.run([*TRKX, *argv, "-i", f"y:0={tmp_path / 'empty.npy'}"], capture_output=True, text=True,
                            check=False, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_infer_output_below_a_file_is_refused_naming_the_file(two_in_two_out_path, tmp_path, capsys):
    """``-o FILE/o.npz`` where ``FILE`` is a file: one line saying that it is not a directory, status 2."""
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    argv = ["infer", str(two_in_two_out_path), "-i", f"input.1={tmp_path / 'x.npy'}", "-i", f"y:0={tmp_path / 'x.npy'}"]
    assert main([*argv, "-o", str(taken / "o.npz")]) == 2
    assert f"'{taken}' exists and is not a directory" in _error_line(capsys, "infer")
    assert taken.read_text() == "a file\n"


def _error_line(capsys, command: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"trkx {command}: error: "), lines[0]
    return lines[0]


def test_infer_writes_the_file_it_names(two_in_two_out_path, tmp_path, capsys):
    """numpy adds ``.npz`` to a name without it: the command names the file it wrote, and refuses a directory."""
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    argv = ["infer", str(two_in_two_out_path), "-i", f"input.1={tmp_path / 'x.npy'}", "-i", f"y:0={tmp_path / 'x.npy'}"]
    assert main([*argv, "-o", str(tmp_path / "result")]) == 0
    assert f"wrote {tmp_path / 'result.npz'}:" in capsys.readouterr().out
    assert (tmp_path / "result.npz").is_file()
    (tmp_path / "folder.npz").mkdir()
    for output in ("folder", "folder.npz", ""):
        assert main([*argv, "-o", str(tmp_path / output) if output else ""]) == 2
        assert "expected a .npz file to write" in capsys.readouterr().err


def test_console_script_subprocess(two_in_two_out_path, tmp_path):
    x = np.array([[1, 2, 3]], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [*TRKX, "infer", str(two_in_two_out_path), "-i", f"input.1={tmp_path / 'x.npy'}",
         "-i", f"y:0={tmp_path / 'x.npy'}", "-o", str(tmp_path / "o.npz")],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no ONNX Runtime log noise (CUDA probing stays quiet)
    with np.load(tmp_path / "o.npz") as saved:
        np.testing.assert_array_equal(saved["sum"], x + x)
        np.testing.assert_array_equal(saved["prod:0"], x * x)
    info = subprocess.run([*TRKX, "info", str(two_in_two_out_path)], capture_output=True, text=True, check=True)
    assert "input.1  float32  [?, 3]  field input_1" in info.stdout


def test_infer_writes_outputs_named_like_the_parameters_of_numpys_savez(tmp_path):
    """Outputs named ``file`` and ``allow_pickle`` are written under their names like any other."""
    model = onnx_models.copies_model(tmp_path, ("file", "allow_pickle"))
    x = np.array([1.5, -2.0], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["infer", str(model), "-i", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz", allow_pickle=False) as saved:
        assert list(saved.keys()) == ["file", "allow_pickle"]
        for name in saved:
            np.testing.assert_array_equal(saved[name], x)
