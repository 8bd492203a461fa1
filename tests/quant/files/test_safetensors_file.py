import pickle

import pytest
import torch
from safetensors.torch import save_file

from sd35_fp8.quant.errors import SD35FP8Error
from sd35_fp8.quant.files.safetensors_file import read_header, read_tensors


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"a.weight": torch.randn(64, 32), "b.bias": torch.randn(8).half()}, str(path),
              metadata={"modelspec.title": "x"})
    return path


def test_reads_shapes_and_metadata_without_data(good_file):
    header = read_header(good_file)
    assert header.tensors["a.weight"].shape == (64, 32) and header.tensors["b.bias"].dtype == "F16"
    assert header.metadata == {"modelspec.title": "x"}
    assert [name for name, _ in read_tensors(header, ["b.bias"])] == ["b.bias"]


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_files_are_refused_and_never_unpickled(tmp_path, suffix):
    marker = tmp_path / "unpickled"
    path = tmp_path / f"model{suffix}"
    # Unpickling this would create the marker file.
    path.write_bytes(pickle.dumps(type("Evil", (), {"__reduce__": lambda self: (open, (str(marker), "w"))})()))
    with pytest.raises(SD35FP8Error, match=rf"model{suffix} is a pickle file"):
        read_header(path)
    assert not marker.exists()


# every message about a damaged file ends with what to do
GET_IT_AGAIN = r"([Dd]ownload|get) (it|the file) again\.$"


def test_missing_file(tmp_path):
    with pytest.raises(SD35FP8Error, match="nothere.safetensors was not found") as error:
        read_header(tmp_path / "nothere.safetensors")
    # the converter shows this message too: no node widgets in it
    assert "node" not in str(error.value) and "check the path" in str(error.value)


def test_truncated_file(good_file):
    data = good_file.read_bytes()
    good_file.write_bytes(data[: len(data) - 100])
    with pytest.raises(SD35FP8Error, match="good.safetensors is truncated.*" + GET_IT_AGAIN):
        read_header(good_file)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\xff" * 64, b"PK\x03\x04" + b"\0" * 60,
                                     (20).to_bytes(8, "little") + b"{not json at all!!!}"])
def test_corrupt_headers(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(SD35FP8Error, match="bad.safetensors is corrupt.*" + GET_IT_AGAIN):
        read_header(path)


def test_header_sizes_that_do_not_match_dtype(tmp_path, good_file):
    data = bytearray(good_file.read_bytes())
    text = data.decode("latin-1").replace('"F32"', '"F16"', 1)
    good_file.write_bytes(text.encode("latin-1"))
    with pytest.raises(SD35FP8Error, match="corrupt: tensor 'a.weight'.*" + GET_IT_AGAIN):
        read_header(good_file)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_weights_are_refused(tmp_path, bad_value):
    weight = torch.randn(16, 16).bfloat16()
    weight[3, 5] = bad_value
    path = tmp_path / "diverged.safetensors"
    save_file({"ok": torch.ones(2), "layer.weight": weight}, str(path))
    header = read_header(path)
    with pytest.raises(SD35FP8Error, match=r"diverged.safetensors has NaN or inf values in layer.weight"):
        list(read_tensors(header, ["ok", "layer.weight"]))
