"""Sharded diffusers folders: given as the index, the folder or any shard; broken sets refused."""
import json
import os

import pytest

from sd35_fp8.quant.errors import SD35FP8Error
from tests.fixtures import quantized_files
from tests.fixtures.quantized_files import read_model, same_bits

SHARD_1 = "diffusion_pytorch_model-00001-of-00003.safetensors"
INDEX = "diffusion_pytorch_model.safetensors.index.json"


@pytest.mark.parametrize("pick", ["index", "folder", "shard"])
def test_sharded_model_reads_whole(tmp_path, source, pick):
    folder = tmp_path / "transformer"
    quantized_files.write_diffusers(folder, source, shards=3)
    path = {"index": folder / INDEX, "folder": folder, "shard": folder / SHARD_1}[pick]
    contents, read = read_model(path)
    assert read.keys() == source.keys() and all(same_bits(read[k], v) for k, v in source.items())


def test_index_naming_a_missing_shard(tmp_path, source):
    folder = tmp_path / "transformer"
    quantized_files.write_diffusers(folder, source, shards=3)
    os.remove(folder / "diffusion_pytorch_model-00002-of-00003.safetensors")
    with pytest.raises(SD35FP8Error, match=f"{INDEX} names the shard diffusion_pytorch_model-00002-of-00003.safetensors, "
                                           "which is not in .*incomplete"):
        read_model(folder / SHARD_1)


def test_shard_without_its_index(tmp_path, source):
    folder = tmp_path / "transformer"
    quantized_files.write_diffusers(folder, source, shards=3)
    os.remove(folder / INDEX)
    with pytest.raises(SD35FP8Error, match=f"{SHARD_1} is one shard of a model split into 3 files, but its index"):
        read_model(folder / SHARD_1)


def test_index_and_shards_that_disagree(tmp_path, source):
    folder = tmp_path / "transformer"
    quantized_files.write_diffusers(folder, source, shards=3)
    index = json.loads((folder / INDEX).read_text())
    index["weight_map"]["proj_out.weight"] = SHARD_1 if index["weight_map"]["proj_out.weight"] != SHARD_1 else \
        "diffusion_pytorch_model-00002-of-00003.safetensors"
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(SD35FP8Error, match=f"{INDEX} says proj_out.weight is in .*, but that shard does not hold it"):
        read_model(folder)


def test_corrupt_index_and_corrupt_shard(tmp_path, source):
    folder = tmp_path / "transformer"
    quantized_files.write_diffusers(folder, source, shards=3)
    data = (folder / SHARD_1).read_bytes()
    (folder / SHARD_1).write_bytes(data[: len(data) // 2])
    with pytest.raises(SD35FP8Error, match=f"{SHARD_1} is truncated"):
        read_model(folder)
    (folder / INDEX).write_text("{not json")
    with pytest.raises(SD35FP8Error, match=f"{INDEX} is not a readable safetensors index"):
        read_model(folder)
