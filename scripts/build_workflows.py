"""Builds the shipped workflows (workflows/*.json) and their template-browser thumbnails (.jpg) in the
real ComfyUI frontend, so that each file is what the menu's Save writes and no node overlaps another.

Each graph below is created node by node in Chromium against a ComfyUI server with this pack, every
node sized by the frontend itself (never smaller than its widgets need), laid out in columns, saved
with app.graph.serialize() and photographed at full scale, then shrunk into the thumbnail.

    bash scripts/setup_host.sh && source .host/env && $SD35FP8_PYTHON scripts/build_workflows.py [name ...]
"""
import io
import json
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.comfy_host import host_env  # noqa: E402
from devtools.comfy_server import ComfyServer, make_base  # noqa: E402

WORKFLOWS_DIR = REPO / "workflows"
THUMBNAIL_WIDTH = 640
GAP = 50  # between columns, and between a node's bottom and the next node's title bar
# A little room beyond what this frontend measures: another frontend's fonts can be a few pixels wider.
WIDTH_MARGIN = 1.15
NOTE_WIDTH, NOTE_MIN_HEIGHT = 460, 420  # the notes' text fits in 460 x 420

LARGE = "sd3.5_large.safetensors"
FILES_LARGE = f"""**Files** (Hugging Face, stabilityai/stable-diffusion-3.5-large):
- `models/checkpoints/{LARGE}`
- `models/text_encoders/clip_l.safetensors`, `clip_g.safetensors` and `t5xxl_fp16.safetensors` (the
  repository's `text_encoders/` folder)"""
TEXT_ENCODER_CHOICES = """Less memory for the text encoders: preset **T5 in FP8** (about 6 GB instead of 10) or
**no T5 (L+G)** (1.5 GB; shorter prompts understood less well)."""
ONE_MEGAPIXEL = "Image size: about one megapixel (1024x1024, 1152x896, ...), sides multiples of 16."
PROMPT = "a photograph of a red fox sitting in fresh snow, soft morning light, sharp focus"


@dataclass(frozen=True)
class Node:
    key: str
    type: str
    widgets: dict = field(default_factory=dict)
    title: str | None = None
    min_size: tuple = (0, 0)


@dataclass(frozen=True)
class Workflow:
    name: str
    note: str
    columns: tuple  # tuples of Node, left to right, each column top to bottom; the note goes left of them
    links: tuple  # ("from_key.OUTPUT_NAME", "to_key.input_name")


def loader(ckpt_name, compute="auto"):
    return Node("ckpt", "SD35FP8CheckpointLoader", {"ckpt_name": ckpt_name, "policy": "fp8_default",
                                                    "compute": compute, "text_encoders": "as stored", "attention": "fp8"},
                min_size=(340, 0))


def text_encoders(preset="full (L+G+T5)"):
    t5 = "none" if preset == "no T5 (L+G)" else "t5xxl_fp16.safetensors"
    return Node("te", "SD35FP8TextEncoderPreset", {"preset": preset, "clip_l": "clip_l.safetensors",
                                                   "clip_g": "clip_g.safetensors", "t5xxl": t5}, min_size=(340, 0))


def prompts(negative=True):
    positive = Node("positive", "CLIPTextEncode", {"text": PROMPT}, "Positive Prompt", (400, 160))
    if not negative:  # CFG 1: the negative prompt is never used
        return positive, Node("negative", "ConditioningZeroOut", title="Negative (unused at CFG 1)", min_size=(400, 0))
    return positive, Node("negative", "CLIPTextEncode", {"text": ""}, "Negative Prompt", (400, 100))


def sampler(steps, cfg, denoise=1.0):
    return Node("sampler", "KSampler", {"seed": 42, "control_after_generate": "randomize", "steps": steps, "cfg": cfg,
                                        "sampler_name": "euler", "scheduler": "sgm_uniform", "denoise": denoise},
                min_size=(300, 0))


def decode_and_save(prefix):
    return (Node("decode", "VAEDecode"),
            Node("save", "SaveImage", {"filename_prefix": prefix}, min_size=(420, 440)))


def sampling_links(model="ckpt.MODEL", latent="latent.LATENT", negative_text=True):
    """Model -> ModelSamplingSD3 -> KSampler -> VAEDecode -> SaveImage, with the prompts' conditioning."""
    negative = ("te.CLIP", "negative.clip") if negative_text else ("positive.CONDITIONING", "negative.conditioning")
    return ((model, "shift.model"), ("te.CLIP", "positive.clip"), negative, ("shift.MODEL", "sampler.model"),
            ("positive.CONDITIONING", "sampler.positive"), ("negative.CONDITIONING", "sampler.negative"),
            (latent, "sampler.latent_image"), ("sampler.LATENT", "decode.samples"), ("ckpt.VAE", "decode.vae"),
            ("decode.IMAGE", "save.images"))


def text_to_image(name, note, ckpt, steps, cfg, prefix, compute="auto", preset="full (L+G+T5)", negative=True):
    positive, negative_node = prompts(negative)
    latent = Node("latent", "EmptySD3LatentImage", {"width": 1024, "height": 1024, "batch_size": 1})
    return Workflow(name, note, (
        (loader(ckpt, compute), text_encoders(preset), latent),
        (Node("shift", "ModelSamplingSD3", {"shift": 3.0}), positive, negative_node),
        (sampler(steps, cfg),),
        decode_and_save(prefix)), sampling_links(negative_text=negative))


WORKFLOWS = (
    text_to_image("sd35_large_fp8_text_to_image", f"""## SD3.5 Large FP8: text to image

The checkpoint loader stores the MMDiT in FP8 while it loads (about 8 GB instead of 16) and keeps the
final layer and embedders in full precision. All three text encoders, as the files hold them.

{FILES_LARGE}

**For real use:** write your prompt. 28 steps and CFG 3.5 are Stability's settings for Large. {ONE_MEGAPIXEL}
{TEXT_ENCODER_CHOICES} To skip quantizing on every load, see the *quantize once* workflows.""",
                  LARGE, 28, 3.5, "sd35_fp8/large"),
    text_to_image("sd35_large_fp8_8gb_no_t5", f"""## SD3.5 Large FP8 for 8 GB cards

No T5-XXL (the preset never reads it): CLIP-L and CLIP-G take 1.5 GB instead of 10, and ComfyUI moves
the FP8 MMDiT (about 8 GB) between the card and system memory as it needs. `compute` **auto**: FP8
matmuls on RTX 40/50 (faster than weight-only under an 8 GiB cap, measured), weight-only elsewhere.

**Files** (Hugging Face, stabilityai/stable-diffusion-3.5-large):
- `models/checkpoints/{LARGE}`
- `models/text_encoders/clip_l.safetensors` and `clip_g.safetensors` (the repository's `text_encoders/` folder)

**For real use:** write your prompt. 28 steps, CFG 3.5 (Stability's settings for Large). {ONE_MEGAPIXEL}""",
                  LARGE, 28, 3.5, "sd35_fp8/large_8gb", preset="no T5 (L+G)"),
    text_to_image("sd35_large_turbo_fp8_4_steps", f"""## SD3.5 Large Turbo FP8: 4 steps

Large Turbo is distilled for few steps without classifier-free guidance: 4 steps, CFG 1 (Stability's
settings). At CFG 1 ComfyUI never evaluates a negative prompt, so it is zeroed here.

**Files** (Hugging Face, stabilityai/stable-diffusion-3.5-large-turbo):
- `models/checkpoints/sd3.5_large_turbo.safetensors`
- `models/text_encoders/clip_l.safetensors`, `clip_g.safetensors` and `t5xxl_fp16.safetensors` (the
  repository's `text_encoders/` folder)

**For real use:** write your prompt; keep 4 steps and CFG 1. {ONE_MEGAPIXEL}
{TEXT_ENCODER_CHOICES}""",
                  "sd3.5_large_turbo.safetensors", 4, 1.0, "sd35_fp8/large_turbo", negative=False),
    text_to_image("sd35_medium_fp8_text_to_image", f"""## SD3.5 Medium FP8: text to image

Medium's MMDiT (2.5B parameters) in FP8: about 2.5 GB instead of 5.

**Files** (Hugging Face, stabilityai/stable-diffusion-3.5-medium):
- `models/checkpoints/sd3.5_medium.safetensors`
- `models/text_encoders/clip_l.safetensors`, `clip_g.safetensors` and `t5xxl_fp16.safetensors` (the
  repository's `text_encoders/` folder)

**For real use:** write your prompt. 40 steps and CFG 4.5 are Stability's settings for Medium. Medium
works from 0.25 to 2 megapixels, sides multiples of 16.
{TEXT_ENCODER_CHOICES}""",
                  "sd3.5_medium.safetensors", 40, 4.5, "sd35_fp8/medium"),
    Workflow("sd35_large_fp8_lora", f"""## SD3.5 Large FP8 with a LoRA

ComfyUI's own **LoraLoaderModelOnly** on the FP8 model: the LoRA is applied to the FP8 layers, and
removed exactly when you take it away. Any SD3.5 Large LoRA (diffusers, kohya or OneTrainer key names).

{FILES_LARGE}
- your LoRA in `models/loras/` (here `sd35_large_lora.safetensors`: pick yours in `lora_name`)

**For real use:** pick your LoRA and its strength; put its trigger words in the prompt. 28 steps,
CFG 3.5. {ONE_MEGAPIXEL}
{TEXT_ENCODER_CHOICES}""", (
        (loader(LARGE), text_encoders(), Node("latent", "EmptySD3LatentImage",
                                             {"width": 1024, "height": 1024, "batch_size": 1})),
        (Node("lora", "LoraLoaderModelOnly", {"lora_name": "sd35_large_lora.safetensors", "strength_model": 1.0},
              min_size=(340, 0)),
         Node("shift", "ModelSamplingSD3", {"shift": 3.0}), *prompts()),
        (sampler(28, 3.5),),
        decode_and_save("sd35_fp8/large_lora")),
        (("ckpt.MODEL", "lora.model"),) + sampling_links(model="lora.MODEL")),
    Workflow("sd35_large_fp8_image_to_image", f"""## SD3.5 Large FP8: image to image

Your image, encoded by the checkpoint's VAE, is the starting point: `denoise` below 1 keeps its
composition (0.5: close to it; 0.9: little of it is left).

{FILES_LARGE}
- your image in ComfyUI's `input/` folder (here `example.png`), or through Load Image's upload button

**For real use:** load your image (about one megapixel, sides multiples of 16; larger images are slow),
describe the result you want, set `denoise`. 28 steps, CFG 3.5.
{TEXT_ENCODER_CHOICES}""", (
        (loader(LARGE), text_encoders(), Node("image", "LoadImage", {"image": "example.png"}, min_size=(340, 360))),
        (Node("shift", "ModelSamplingSD3", {"shift": 3.0}), *prompts(), Node("encode", "VAEEncode")),
        (sampler(28, 3.5, denoise=0.7),),
        decode_and_save("sd35_fp8/large_img2img")),
        (("image.IMAGE", "encode.pixels"), ("ckpt.VAE", "encode.vae")) + sampling_links(latent="encode.LATENT")),
    Workflow("sd35_large_fp8_quantize_once_1_save", f"""## Quantize once (1 of 2): save the FP8 model

Quantizing SD3.5 Large reads its 16 GB of bf16 weights at every load. Run this workflow once: it
writes the FP8 MMDiT and the VAE to `models/checkpoints/sd3.5_large_fp8.safetensors` (about 8.3 GB).
Then open *quantize once 2 load*, which loads that file with no quantization and the weights bit for
bit as saved. LoRAs connected before the save node are baked in.

**Files:** `models/checkpoints/{LARGE}` (Hugging Face, stabilityai/stable-diffusion-3.5-large)

**For real use:** pick the source checkpoint and policy. `per_channel` keeps the weights exactly (only
this pack reads the file); `per_tensor` can also be read by stock ComfyUI's loaders, at about 1.4x the
weight error. An existing file is replaced only with `overwrite` on.""", (
        (loader(LARGE),),
        (Node("save", "SD35FP8SaveCheckpoint", {"folder": "checkpoints", "file_name": "sd3.5_large_fp8.safetensors",
                                                "granularity": "per_channel", "overwrite": False},
              min_size=(360, 0)),)),
        (("ckpt.MODEL", "save.model"), ("ckpt.VAE", "save.vae"))),
    text_to_image("sd35_large_fp8_quantize_once_2_load", f"""## Quantize once (2 of 2): load the saved FP8 model

Text to image from the file written by *quantize once 1 save*: its FP8 layers load as stored, with no
quantization (SD3.5 Large: seconds instead of a minute and more).

**Files:**
- `models/checkpoints/sd3.5_large_fp8.safetensors` (made by *quantize once 1 save*; press `r` in
  ComfyUI to refresh the lists after saving)
- `models/text_encoders/clip_l.safetensors`, `clip_g.safetensors` and `t5xxl_fp16.safetensors`
  (Hugging Face, stabilityai/stable-diffusion-3.5-large, `text_encoders/` folder)

**For real use:** write your prompt. 28 steps, CFG 3.5. {ONE_MEGAPIXEL}
{TEXT_ENCODER_CHOICES}""",
                  "sd3.5_large_fp8.safetensors", 28, 3.5, "sd35_fp8/large_saved"),
)

BUILD_GRAPH = """(spec) => {
    app.graph.clear();
    const made = {};
    for (const column of spec.columns) for (const n of column) {
        const node = LiteGraph.createNode(n.type);
        if (n.title) node.title = n.title;
        app.graph.add(node);
        for (const [name, value] of Object.entries(n.widgets)) {
            const widget = node.widgets.find(w => w.name === name);
            if (!widget) throw new Error(`${n.type} has no widget ${name}`);
            widget.value = value;
        }
        made[n.key] = node;
    }
    for (const [from, to] of spec.links) {
        const [fromKey, output] = from.split("."), [toKey, input] = to.split(".");
        const slot = made[fromKey].findOutputSlot(output), target = made[toKey].findInputSlot(input);
        if (slot < 0 || target < 0) throw new Error(`no link ${from} -> ${to}`);
        made[fromKey].connect(slot, made[toKey], target);
    }
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    let x = 0;
    for (const column of spec.columns) {
        let y = title, width = 0;
        for (const n of column) {
            const node = made[n.key], [w, h] = node.computeSize();
            node.size = [Math.ceil(Math.max(w * spec.widthMargin, n.min_size[0])), Math.ceil(Math.max(h, n.min_size[1]))];
            node.pos = [x, y];
            y += node.size[1] + title + spec.gap;
            width = Math.max(width, node.size[0]);
        }
        x += width + spec.gap;
    }
}"""

ADD_NOTE = """(spec) => {
    const note = LiteGraph.createNode("MarkdownNote");
    note.title = "Read me";
    note.widgets[0].value = spec.text;
    app.graph.add(note);
    const nodes = app.graph.nodes.filter(n => n !== note);
    const left = Math.min(...nodes.map(n => n.pos[0]));
    const bottom = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
    for (const node of nodes) node.pos = [node.pos[0] + spec.width + spec.gap, node.pos[1]];
    note.pos = [left, LiteGraph.NODE_TITLE_HEIGHT];
    note.size = [spec.width, Math.max(spec.minHeight, bottom - note.pos[1])];
    return JSON.stringify(app.graph.serialize());
}"""

SHOW_WHOLE_GRAPH = """() => {
    const boxes = app.graph.nodes.map(n => n.getBounding());
    const left = Math.min(...boxes.map(b => b[0])), top = Math.min(...boxes.map(b => b[1]));
    const right = Math.max(...boxes.map(b => b[0] + b[2])), bottom = Math.max(...boxes.map(b => b[1] + b[3]));
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [200 - left, 200 - top];
    app.canvas.setDirty(true, true);
    app.canvas.draw(true, true);
    return [200, 200, Math.ceil(right - left), Math.ceil(bottom - top)];
}"""


def build(page, workflow):
    spec = {"columns": [[vars(n) for n in column] for column in workflow.columns], "links": workflow.links,
            "gap": GAP, "widthMargin": WIDTH_MARGIN}
    page.evaluate(BUILD_GRAPH, spec)
    graph = json.loads(page.evaluate(ADD_NOTE, {"text": workflow.note, "width": NOTE_WIDTH,
                                                "minHeight": NOTE_MIN_HEIGHT, "gap": GAP}))
    # What the menu's Save adds to the graph: an id of its own (stable across rebuilds here), the view
    # (the graph's top left corner, at a scale that shows most of it) and the frontend version.
    graph["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sd35-fp8/workflows/{workflow.name}"))
    graph["extra"] = {"ds": {"scale": 0.8, "offset": [40, 40]},
                      "frontendVersion": page.evaluate("window.__COMFYUI_FRONTEND_VERSION__")}
    (WORKFLOWS_DIR / f"{workflow.name}.json").write_text(json.dumps(graph, indent=2) + "\n")

    page.wait_for_timeout(300)  # the note's markdown view is a DOM element: let it render
    x, y, width, height = page.evaluate(SHOW_WHOLE_GRAPH)
    page.set_viewport_size({"width": x + width + 400, "height": y + height + 400})
    x, y, width, height = page.evaluate(SHOW_WHOLE_GRAPH)
    page.wait_for_timeout(300)
    shot = Image.open(io.BytesIO(page.screenshot(clip={"x": x - 20, "y": y - 20, "width": width + 40,
                                                        "height": height + 40})))
    thumbnail = shot.convert("RGB").resize((THUMBNAIL_WIDTH, round(shot.height * THUMBNAIL_WIDTH / shot.width)),
                                           Image.LANCZOS)
    thumbnail.save(WORKFLOWS_DIR / f"{workflow.name}.jpg", quality=80, optimize=True)


def main(names):
    chosen = [w for w in WORKFLOWS if not names or w.name in names]
    env = host_env()
    base = Path(tempfile.mkdtemp(prefix="sd35_fp8_workflows_"))
    server = ComfyServer(env["SD35FP8_PYTHON"], env["SD35FP8_COMFYUI"], make_base(base), base / "server.log")
    try:
        server.start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server.url)
                       else route.abort())
            page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
            page.goto(server.url)
            page.wait_for_function("!!(window.app && app.graph && app.canvas && app.extensionManager)", timeout=60_000)
            for setting, value in (("Comfy.Minimap.Visible", False), ("Comfy.Graph.CanvasInfo", False)):
                page.evaluate("([id, value]) => app.extensionManager.setting.set(id, value)", [setting, value])
            page.evaluate("app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
            for workflow in chosen:
                build(page, workflow)
                print(f"workflows/{workflow.name}.json and .jpg", flush=True)
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(base)


if __name__ == "__main__":
    main(sys.argv[1:])
