"""The shipped workflows as files, without ComfyUI: a note that says which files go where, a small JPEG
thumbnail for the template browser, and no node drawn over another.

The browser test (tests/e2e/test_workflows_browser.py) checks the same layout as the frontend draws it.
"""
import json
from itertools import combinations

import pytest
from PIL import Image

from devtools.comfy_host import REPO

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
NOTE_TYPES = ("Note", "MarkdownNote")
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's pos
THUMBNAIL_MAX_BYTES = 50_000
# widgets_values index -> folder, for the widgets that name a file the user must provide
FILE_WIDGETS = {
    "SD35FP8CheckpointLoader": {0: "models/checkpoints"},
    "SD35FP8DiffusionModelLoader": {0: "models/diffusion_models"},
    "SD35FP8TextEncoderPreset": {1: "models/text_encoders", 2: "models/text_encoders", 3: "models/text_encoders"},
    "SD35FP8TextEncoders": {0: "models/text_encoders", 1: "models/text_encoders", 2: "models/text_encoders"},
    "LoraLoaderModelOnly": {0: "models/loras"},
    "LoadImage": {0: "input/"},
}


def nodes_of(path):
    return json.loads(path.read_text())["nodes"]


def boxes(nodes):
    """(left, top, right, bottom) of each node, title bar included."""
    return [(n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in nodes]


def overlapping(boxes_by_name):
    return [(a, b) for (a, box_a), (b, box_b) in combinations(boxes_by_name.items(), 2)
            if box_a[0] < box_b[2] and box_b[0] < box_a[2] and box_a[1] < box_b[3] and box_b[1] < box_a[3]]


def test_there_are_workflows():
    assert len(WORKFLOWS) >= 8


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_note_names_every_file_and_its_folder(path):
    nodes = nodes_of(path)
    [note] = [n for n in nodes if n["type"] in NOTE_TYPES]
    text = note["widgets_values"][0]
    needed = [(node["widgets_values"][index], folder) for node in nodes
              for index, folder in FILE_WIDGETS.get(node["type"], {}).items() if node["widgets_values"][index] != "none"]
    assert needed, "the workflow uses no file"
    missing = [f"{folder} {name}" for name, folder in needed if name not in text or folder not in text]
    assert not missing, f"the note does not say where these go: {missing}"
    assert "For real use" in text


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_thumbnail_is_a_small_jpeg_beside_the_workflow(path):
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.stat().st_size < THUMBNAIL_MAX_BYTES
    image = Image.open(thumbnail)
    assert image.format == "JPEG" and min(image.size) >= 100, (image.format, image.size)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_no_node_overlaps_another(path):
    nodes = nodes_of(path)
    names = [f"{n['id']} {n.get('title', n['type'])}" for n in nodes]
    assert overlapping(dict(zip(names, boxes(nodes)))) == []


def test_overlap_check_sees_a_title_bar_under_a_node_above():
    upper = {"pos": [0, 30], "size": [300, 170]}
    lower = {"pos": [0, 220], "size": [300, 100]}  # title bar 190..220: 10 px inside the upper node
    assert overlapping(dict(zip("ab", boxes([upper, lower])))) == [("a", "b")]
    lower["pos"] = [0, 230]
    assert overlapping(dict(zip("ab", boxes([upper, lower])))) == []
