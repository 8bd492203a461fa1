"""The shipped workflows in the real ComfyUI frontend (Chromium), against the real server."""
import json

import pytest
from playwright.sync_api import sync_playwright

from tests.comfy_host import REPO
from tests.e2e.comfy_server import execution_error, ui_to_api
from tests.e2e.t2i import assert_image
from tests.fixtures import tiny_sd3

pytestmark = pytest.mark.e2e

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
NO_T5_WORKFLOW = REPO / "workflows" / "sd35_large_fp8_t2i_no_t5.json"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
APP_READY = "!!(window.app && app.graph && app.canvas && window.LiteGraph?.registered_node_types['KSampler'])"
SET_WIDGETS = """(values) => {
    for (const node of app.graph.nodes)
        for (const [name, value] of Object.entries(values[node.type] ?? {}))
            node.widgets.find(widget => widget.name === name).value = value;
}"""


@pytest.fixture(scope="module")
def official_files(comfy, tiny_models):
    """Tiny files under the official names of the no-T5 set: the official SD3.5 Large file has no
    text encoders; CLIP-L and CLIP-G come from tiny_models."""
    models = comfy.base / "models"
    tiny_sd3.write_checkpoint(models / "checkpoints" / "sd3.5_large.safetensors", clip_l=False)
    # The T5 workflow is only loaded and converted, never run; frontend 1.49 (ComfyUI 0.33) marks
    # a node whose file is missing from the list, so the name must exist.
    (models / "text_encoders" / "t5xxl_fp16.safetensors").touch()


@pytest.fixture(scope="module")
def page(comfy, official_files, tmp_path_factory):
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium_profile"), executable_path="/usr/bin/chromium",
            args=CHROMIUM_FLAGS, headless=True, viewport={"width": 2100, "height": 900})
        # the frontend asks api.comfy.org and others for news and node metadata: keep it local
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(comfy.url)
                      else route.abort())
        context.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        page = context.new_page()
        page.goto(comfy.url)
        page.wait_for_function(APP_READY, timeout=60_000)
        yield page
        context.close()


def open_workflow(page, path):
    """Opens a workflow file through the menu's file input, as Workflow > Open does."""
    node_types = sorted(node["type"] for node in json.loads(path.read_text())["nodes"])
    page.evaluate("app.graph.clear()")
    page.locator("#comfy-file-input").set_input_files(path)
    page.wait_for_function(
        "(types) => JSON.stringify(app.graph.nodes.map(n => n.type).sort()) === JSON.stringify(types)",
        arg=node_types, timeout=30_000)
    return node_types


def is_queue_request(response):
    return response.url.endswith("/api/prompt") and response.request.method == "POST"


def test_our_nodes_are_in_the_frontend(page):
    titles = page.evaluate("(types) => types.map(t => LiteGraph.registered_node_types[t]?.title ?? null)",
                           ["SD35FP8CheckpointLoader", "SD35FP8DiffusionModelLoader"])
    assert titles == ["Load SD3.5 Checkpoint (FP8)", "Load SD3.5 Diffusion Model (FP8)"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def test_workflow_loads_and_converts(page, comfy, path):
    node_types = open_workflow(page, path)
    unknown = page.evaluate("(types) => types.filter(t => !LiteGraph.registered_node_types[t])", node_types)
    assert unknown == [] and "SD35FP8CheckpointLoader" in node_types
    assert page.evaluate("app.graph.nodes.filter(n => n.has_errors).length") == 0

    api_prompt = json.loads(page.evaluate("async () => JSON.stringify((await app.graphToPrompt()).output)"))
    assert page.locator("[role=dialog]").all_inner_texts() == []
    loaders = [n["inputs"] for n in api_prompt.values() if n["class_type"] == "SD35FP8CheckpointLoader"]
    assert [(loader["ckpt_name"], loader["policy"]) for loader in loaders] == [
        ("sd3.5_large.safetensors", "fp8_default")]
    # scripts/demo.py converts workflows in Python: it must agree with the frontend
    for node in api_prompt.values():
        del node["_meta"]
    assert ui_to_api(json.loads(path.read_text()), comfy.get("/object_info")) == api_prompt


def test_no_t5_workflow_runs_from_the_run_button(page, comfy, tmp_path):
    open_workflow(page, NO_T5_WORKFLOW)
    page.evaluate(SET_WIDGETS, {"EmptySD3LatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}})
    with page.expect_response(is_queue_request) as response:
        page.get_by_role("button", name="Run", exact=True).first.click()  # frontend 1.49 adds a second "Run" (mode menu)
    reply = response.value.json()
    assert "prompt_id" in reply, reply

    entry = comfy.wait(reply["prompt_id"])
    assert execution_error(entry) is None, execution_error(entry)
    [image] = comfy.images(entry)
    assert_image(image, 64)
    # the page got the result over its websocket and shows it in the Save Image node
    page.wait_for_function("app.graph.nodes.some(n => n.type === 'SaveImage' && n.imgs?.length)",
                           timeout=30_000)
    page.screenshot(path=tmp_path / "no_t5_workflow.png")
