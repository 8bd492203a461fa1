"""Opens what a user points at: one .safetensors file, or a diffusers model sharded over several
files with its `*.safetensors.index.json` (given as the index, the folder, or any one shard)."""
import json
import os
import re

from ...errors import SD35FP8Error
from ..safetensors_file import SafetensorsHeader, read_header

INDEX_SUFFIX = ".safetensors.index.json"
_SHARD = re.compile(r"^(?P<stem>.+)-\d{5}-of-(?P<count>\d{5})\.safetensors$")


def _index_path(path):
    if path.endswith(INDEX_SUFFIX):
        return path
    if os.path.isdir(path):
        indexes = sorted(f for f in os.listdir(path) if f.endswith(INDEX_SUFFIX))
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if len(indexes) == 1:
            return os.path.join(path, indexes[0])
        if not indexes and len(files) == 1:
            return None
        raise SD35FP8Error(f"{path} is a folder with {len(indexes)} index files and {len(files)} .safetensors files: "
                           f"point at one .safetensors file or one *{INDEX_SUFFIX} instead.")
    shard = _SHARD.match(os.path.basename(path))
    if shard is None:
        return None
    index = os.path.join(os.path.dirname(path), shard["stem"] + INDEX_SUFFIX)
    if not os.path.isfile(index):
        raise SD35FP8Error(
            f"{os.path.basename(path)} is one shard of a model split into {int(shard['count'])} files, but its index "
            f"{os.path.basename(index)} is not beside it: download the whole folder (every shard and the index).")
    return index


def read_model_header(path) -> SafetensorsHeader:
    """The header of a single file, or one header over every shard of a sharded model."""
    path = os.fspath(path)
    index = _index_path(path)
    if index is None:
        if os.path.isdir(path):
            path = os.path.join(path, next(f for f in os.listdir(path) if f.endswith(".safetensors")))
        return read_header(path)
    name, folder = os.path.basename(index), os.path.dirname(index)
    try:
        with open(index, encoding="utf-8") as f:
            index_json = json.load(f)
        weight_map = dict(index_json["weight_map"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SD35FP8Error(f"{name} is not a readable safetensors index ({e}): download it again.") from None
    headers = {}
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise SD35FP8Error(f"{name} names the shard {shard}, which is not in {folder}: the download is "
                               "incomplete; get the missing shard.")
        headers[shard] = read_header(shard_path)
    tensors, shard_paths = {}, {}
    for key, shard in weight_map.items():
        if key not in headers[shard].tensors:
            raise SD35FP8Error(f"{name} says {key} is in {shard}, but that shard does not hold it: the shards and "
                               "the index come from different downloads; get the folder again.")
        tensors[key] = headers[shard].tensors[key]
        shard_paths[key] = headers[shard].path
    metadata = {k: v for h in headers.values() for k, v in h.metadata.items()}
    return SafetensorsHeader(index, tensors, metadata, shard_paths)
