import errno
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sd35_fp8.quant.errors import SD35FP8Error
from sd35_fp8.quant.files import safetensors_writer
from sd35_fp8.quant.files.safetensors_writer import SafetensorsWriter


def mixed_tensors():
    return {"b.weight": torch.randn(5, 3).bfloat16(), "a.scale": torch.rand(()), "c.fp8": torch.randn(7, 2).to(torch.float8_e4m3fn),
            "d.marker": torch.tensor([1, 2, 3], dtype=torch.uint8), "e.half": torch.randn(3).half(), "f.index": torch.arange(3)}


def write(path, tensors, metadata=None, order=None, overwrite=False):
    entries = {k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()}
    with SafetensorsWriter(path, entries, metadata, overwrite) as writer:
        for key in order or tensors:
            writer.write(key, tensors[key])


def test_same_bytes_as_safetensors_save_file_in_any_write_order(tmp_path):
    tensors = mixed_tensors()
    save_file(tensors, str(tmp_path / "reference.safetensors"))
    write(tmp_path / "streamed.safetensors", tensors, order=sorted(tensors, reverse=True))
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()


def test_metadata_is_written_in_sorted_order(tmp_path):
    tensors, metadata = mixed_tensors(), {"z": "1", "a": "two"}
    write(tmp_path / "a.safetensors", tensors, metadata)
    write(tmp_path / "b.safetensors", tensors, dict(reversed(metadata.items())))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        assert f.metadata() == metadata
        assert all(torch.equal(f.get_tensor(k).reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8))
                   for k, v in tensors.items())


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"keep me")
    with pytest.raises(SD35FP8Error, match="model.safetensors already exists"):
        write(path, mixed_tensors())
    assert path.read_bytes() == b"keep me"
    write(path, mixed_tensors(), overwrite=True)
    assert set(load_file(str(path))) == set(mixed_tensors())
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_disk_full_leaves_nothing_behind(tmp_path, monkeypatch):
    tensors = mixed_tensors()
    real_write = safetensors_writer.SafetensorsWriter.write

    def fail_on_third(self, name, tensor):
        if len(self.written) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, name, tensor)

    monkeypatch.setattr(safetensors_writer.SafetensorsWriter, "write", fail_on_third)
    with pytest.raises(SD35FP8Error, match=r"Could not write model.safetensors .*No space left on device.*Nothing was written"):
        write(tmp_path / "model.safetensors", tensors)
    assert os.listdir(tmp_path) == []


def test_missing_folder_says_so_and_not_disk_space(tmp_path):
    with pytest.raises(SD35FP8Error, match="Could not write model.safetensors to .*missing.*does not exist") as error:
        write(tmp_path / "missing" / "model.safetensors", mixed_tensors())
    assert "disk space" not in str(error.value)


# (errno, advice that fits it, advice for other errors that must not be given)
OS_ERRORS = [
    (errno.ENOSPC, r"free some disk space \(the file takes 0\.00 GiB\)", "permission"),
    (errno.EDQUOT, r"disk quota", "permission"),
    (errno.EACCES, r"permission to write to the folder", "disk space"),
    (errno.EPERM, r"permission to write to the folder", "disk space"),
    (errno.EROFS, r"read-only", "disk space"),
    (errno.ENAMETOOLONG, r"shorter file name", "disk space"),
    (errno.EIO, r"check the disk", "permission"),
]


@pytest.mark.parametrize("code, advice, not_advice", OS_ERRORS, ids=[errno.errorcode[case[0]] for case in OS_ERRORS])
def test_each_os_error_gets_its_own_advice(tmp_path, monkeypatch, code, advice, not_advice):
    def fail(self, name, tensor):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(safetensors_writer.SafetensorsWriter, "write", fail)
    with pytest.raises(SD35FP8Error, match=f"Could not write model.safetensors .*{os.strerror(code)}.*{advice}") as error:
        write(tmp_path / "model.safetensors", mixed_tensors())
    assert not_advice not in str(error.value)
    assert os.listdir(tmp_path) == []


def test_longest_legal_name_is_written_and_a_longer_one_refused_before_writing(tmp_path):
    longest = "é" * 121 + ".safetensors"  # 254 bytes in UTF-8: the temporary name must stay within 255 too
    write(tmp_path / longest, mixed_tensors())
    assert os.listdir(tmp_path) == [longest]
    too_long = "x" * 244 + ".safetensors"
    with pytest.raises(SD35FP8Error, match=f"Could not write {too_long} .*256 bytes.*at most 255.*shorter file name"):
        write(tmp_path / too_long, mixed_tensors())
    assert os.listdir(tmp_path) == [longest]


def test_any_error_midway_removes_the_temporary_file(tmp_path):
    tensors = mixed_tensors()
    entries = {k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()}
    with pytest.raises(RuntimeError, match="interrupted"):
        with SafetensorsWriter(tmp_path / "model.safetensors", entries) as writer:
            writer.write("b.weight", tensors["b.weight"])
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_a_missing_or_mismatched_tensor_is_never_renamed_into_place(tmp_path):
    tensors = mixed_tensors()
    with pytest.raises(ValueError, match="never written"):
        write(tmp_path / "model.safetensors", tensors, order=list(tensors)[:-1])
    entries = {k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()}
    with pytest.raises(ValueError, match="planned"):
        with SafetensorsWriter(tmp_path / "model.safetensors", entries) as writer:
            writer.write("b.weight", torch.zeros(5, 3))
    assert os.listdir(tmp_path) == []
