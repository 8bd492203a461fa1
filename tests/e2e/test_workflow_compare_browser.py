"""workflows/sd35_fp8_vs_full_precision.json in the real frontend (Chromium) against the real
server: it opens without unknown or overlapping nodes, runs from the Run button on tiny models,
and its pictures and texts come back and show in the page."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from tests.comfy_host import REPO
from tests.e2e.comfy_server import execution_error
from tests.e2e.test_workflows_browser import (SET_WIDGETS, is_queue_request, official_files,  # noqa: F401 (fixtures)
                                              open_workflow, page)

pytestmark = pytest.mark.e2e

WORKFLOW = REPO / "workflows" / "sd35_fp8_vs_full_precision.json"
SIZE = 64
WHOLE_GRAPH_VIEWPORT = {"width": 2200, "height": 1400}
OVERLAPPING_NODES = """() => {
    const boxes = app.graph.nodes.map(n => [n.id, Array.from(n.getBounding())]);
    const overlaps = [];
    for (const [i, [a, [ax, ay, aw, ah]]] of boxes.entries())
        for (const [b, [bx, by, bw, bh]] of boxes.slice(i + 1))
            if (ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah) overlaps.push([a, b]);
    return overlaps;
}"""


def node_id(title_or_type):
    nodes = json.loads(WORKFLOW.read_text())["nodes"]
    [node] = [n for n in nodes if title_or_type in (n.get("title"), n["type"])]
    return str(node["id"])


def output_image(comfy, image):
    return Image.open(comfy.base / image["type"] / image["subfolder"] / image["filename"])


def test_opens_with_known_nodes_that_do_not_overlap(page):
    node_types = open_workflow(page, WORKFLOW)
    assert page.evaluate("(types) => types.filter(t => !LiteGraph.registered_node_types[t])", node_types) == []
    assert {"SD35FP8CheckpointLoader", "SD35FP8CompareImages", "SD35FP8QuantizationReport", "Note"} <= set(node_types)
    assert page.evaluate("app.graph.nodes.filter(n => n.has_errors).length") == 0
    assert page.evaluate(OVERLAPPING_NODES) == []
    loaders = page.evaluate("app.graph.nodes.filter(n => n.type === 'SD35FP8CheckpointLoader')"
                            ".map(n => n.widgets.map(w => w.value).slice(0, 2))")
    assert sorted(loaders) == [["sd3.5_large.safetensors", "fp8_default"], ["sd3.5_large.safetensors", "off"]]
    seeds = page.evaluate("app.graph.nodes.filter(n => n.type === 'KSampler').map(n => n.widgets[0].value)")
    assert len(seeds) == 2 and seeds[0] == seeds[1]


def test_runs_from_the_run_button_and_shows_its_pictures(page, comfy):
    open_workflow(page, WORKFLOW)
    page.evaluate(SET_WIDGETS, {"EmptySD3LatentImage": {"width": SIZE, "height": SIZE}, "KSampler": {"steps": 2}})
    # the whole graph in view, as on a large screen: the frontend loads a node's pictures when it draws it
    page.set_viewport_size(WHOLE_GRAPH_VIEWPORT)
    page.evaluate("app.canvas.ds.scale = 0.75; app.canvas.ds.offset = [40, 40]; app.canvas.setDirty(true, true)")
    with page.expect_response(is_queue_request) as response:
        page.get_by_role("button", name="Run", exact=True).first.click()  # frontend 1.49 adds a second "Run" (mode menu)
    reply = response.value.json()
    assert "prompt_id" in reply, reply
    entry = comfy.wait(reply["prompt_id"])
    assert execution_error(entry) is None, execution_error(entry)
    outputs = entry["outputs"]

    [comparison] = outputs[node_id("SaveImage")]["images"]
    picture = output_image(comfy, comparison)
    assert comparison["type"] == "output" and picture.format == "PNG"
    assert picture.width > 3 * 256 and picture.height > 256  # 64 px images drawn at least 256 px wide
    assert np.asarray(picture.convert("RGB"), dtype=np.float32).std() > 1.0

    [chart] = outputs[node_id("Quantization report")]["images"]
    assert output_image(comfy, chart).width == 1600

    [metrics] = outputs[node_id("PSNR and SSIM")]["text"]
    lines = metrics.splitlines()
    assert lines[0].startswith("FP8 (policy fp8_default) against full precision (policy off)")
    psnr, ssim = float(lines[1].split()[3]), float(lines[1].split()[6])
    assert math.isfinite(psnr) and 0 < ssim < 1  # FP8 changes the image, a little
    [summary] = outputs[node_id("Quantization report (text)")]["text"]
    assert "policy fp8_default (per_channel scales): 17 linears in FP8" in summary

    # The page got both pictures over its websocket and shows the saved comparison. Whether frontend
    # 1.32 also draws the PreviewImage node's picture in time varies from run to run (its /view request
    # answers 200, yet node.imgs sometimes stays unset), so that one is checked up to its arrival.
    page.wait_for_function("app.graph.nodes.find(n => n.type === 'SaveImage').imgs?.length", timeout=30_000)
    page.wait_for_function("app.graph.nodes.find(n => n.type === 'PreviewImage').images?.length", timeout=30_000)
