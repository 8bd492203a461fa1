"""A real ComfyUI server with this pack installed, for the end-to-end tests and scripts/demo.py.

Stdlib only, so it runs under the host's Python (scripts/setup_host.sh). The server is
ComfyUI's own main.py in a child process with its own --base-directory; nothing is mocked.
"""
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from devtools.comfy_host import REPO

SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Notification.ShowVersionUpdates": False}
MODEL_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "vae", "loras")
# Nodes of the frontend alone (notes): never sent to the server, absent from /object_info.
FRONTEND_ONLY_NODES = ("Note", "MarkdownNote")


def make_base(base, models_dir=None):
    """A ComfyUI --base-directory with this checkout as custom_nodes/sd35_fp8, and either
    models_dir as its models/ or empty model folders."""
    base = Path(base)
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "sd35_fp8"
    if not link.is_symlink():
        link.symlink_to(REPO)
    if models_dir is not None:
        (base / "models").symlink_to(Path(models_dir).resolve())
    else:
        for folder in MODEL_FOLDERS:
            (base / "models" / folder).mkdir(parents=True, exist_ok=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(SETTINGS))
    return base


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, python, comfyui, base, log_path, cpu=True, extra_args=()):
        self.python, self.comfyui, self.base = python, Path(comfyui), Path(base)
        self.log_path = Path(log_path)
        self.cpu = cpu
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout=120):
        command = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--disable-auto-launch", "--base-directory", str(self.base), "--disable-api-nodes",
                   # the default database lives inside the ComfyUI folder, shared by every server
                   "--database-url", "sqlite:///:memory:"]
        if self.cpu:
            command.append("--cpu")
        command += self.extra_args
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.comfyui, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer /system_stats in {timeout} s:\n{self.log_tail()}")

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines=80):
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.load(response)

    def queue(self, prompt):
        """POST /prompt: the reply, with "prompt_id" when queued, or the 400 body ("error", "node_errors")."""
        request = urllib.request.Request(self.url + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code != 400:
                raise
            return json.load(error)

    def wait(self, prompt_id, timeout=300):
        """The /history entry of a prompt once it has finished (or failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                return history[prompt_id]
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} not finished in {timeout} s:\n{self.log_tail()}")

    def run(self, prompt, timeout=300):
        reply = self.queue(prompt)
        if "prompt_id" not in reply:
            raise AssertionError(f"prompt rejected: {json.dumps(reply, indent=1)}")
        return self.wait(reply["prompt_id"], timeout)

    def images(self, entry):
        """Paths of the images a finished prompt saved."""
        return [self.base / "output" / image["subfolder"] / image["filename"]
                for output in entry["outputs"].values() for image in output.get("images", [])]


def execution_error(entry):
    """The execution_error message (node_id, node_type, exception_message, ...) of a failed prompt's
    /history entry, or None if it succeeded."""
    for kind, message in entry["status"]["messages"]:
        if kind == "execution_error":
            return message
    return None


def ui_to_api(workflow, object_info):
    """A UI-format workflow (as the frontend saves it) in API format, for stock-style nodes.

    widgets_values follow the node's widget inputs in /object_info order, connected ones included;
    a seed with control_after_generate stores one extra value ("fixed", "randomize", ...) after it.
    """
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_NODES:
            continue
        spec = object_info[node["type"]]["input"]
        connected = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        widget_values = iter(node.get("widgets_values", []))
        inputs = {}
        for name, (input_type, *options) in {**spec["required"], **spec.get("optional", {})}.items():
            if isinstance(input_type, list) or input_type in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                inputs[name] = next(widget_values)
                if options and options[0].get("control_after_generate"):
                    next(widget_values)
            if name in connected:
                _, from_node, from_slot, *_ = connected[name]
                inputs[name] = [str(from_node), from_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
