"""The shipped workflows: UI-format structure (node types, links, widget order) and end-to-end runs.

``workflows/*.json`` are UI-format (version 0.4) templates; ``tests/workflows_api/*.json`` are their
API-format copies (what ComfyUI's frontend sends to /prompt; checked equal to the frontend's own
``graphToPrompt`` output by hand). The API copies run here through our node classes on a tiny
generator, with a small executor and minimal stand-ins for the ComfyUI core nodes they use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import REPO, realworld

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
API_DIR = REPO / "tests" / "workflows_api"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

# The ComfyUI core nodes the workflows use, as ComfyUI 0.3.64's /object_info declares them:
# inputs in widget order (name, type, options) and output types. "Note" is a frontend-only node.
CORE_NODES = {
    "LoadImage": ([("image", "FILE", {"image_upload": True})], ["IMAGE", "MASK"]),
    "ImageScaleBy": ([("image", "IMAGE", {}), ("upscale_method", UPSCALE_METHODS, {}),
                      ("scale_by", "FLOAT", {"min": 0.01, "max": 8.0})], ["IMAGE"]),
    "SaveImage": ([("images", "IMAGE", {}), ("filename_prefix", "STRING", {})], []),
    "PreviewImage": ([("images", "IMAGE", {})], []),
    "UpscaleModelLoader": ([("model_name", "FILE", {})], ["UPSCALE_MODEL"]),
    "ImageUpscaleWithModel": ([("upscale_model", "UPSCALE_MODEL", {}), ("image", "IMAGE", {})], ["IMAGE"]),
}
FRONTEND_ONLY = {"Note"}
# COMBO widgets whose choices are the user's files (any name is valid in a template).
FILE_WIDGETS = {"model_name", "direction_file", "latent_file", "image", "clip_name", "statistics", "mapper_file"}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def node_spec(pack, node_type: str):
    """Returns ([(input name, type or choices, options)], [output types]) for a core or pack node."""
    if node_type in CORE_NODES:
        return CORE_NODES[node_type]
    cls = pack.NODE_CLASS_MAPPINGS[node_type]
    inputs = cls.INPUT_TYPES()
    spec = [(name, value[0], value[1] if len(value) > 1 else {})
            for section in ("required", "optional") for name, value in inputs.get(section, {}).items()]
    return spec, list(cls.RETURN_TYPES)


def is_widget(kind, options) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES or kind == "FILE") and not options.get("forceInput")


def widget_layout(pack, node_type: str) -> list[tuple[str, object, dict]]:
    """Returns the frontend's widget order: (name, kind, options); kind "_control"/"_upload" for the
    extra values the frontend stores (control_after_generate after seed INTs, the upload button)."""
    layout = []
    for name, kind, options in node_spec(pack, node_type)[0]:
        if not is_widget(kind, options):
            continue
        layout.append((name, kind, options))
        if kind == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed")):
            layout.append((name, "_control", {}))
        if options.get("image_upload"):
            layout.append((name, "_upload", {}))
    return layout


def ui_to_api(pack, workflow: dict) -> dict:
    """Returns the API-format prompt for a UI-format workflow (what the frontend's graphToPrompt does)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        inputs = {}
        for (name, kind, _), value in zip(widget_layout(pack, node["type"]), node.get("widgets_values", [])):
            if kind not in ("_control", "_upload"):
                inputs[name] = value
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, origin, origin_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(origin), origin_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def test_every_workflow_has_an_api_copy_and_a_note():
    assert {p.name for p in WORKFLOWS} >= {"pti_edit_photo.json", "pti_edit_upscale.json",
                                          "stylegan_generate_and_edit.json"}
    for path in WORKFLOWS:
        workflow = load(path)
        assert workflow["version"] == 0.4
        assert (API_DIR / path.name).is_file()
        notes = [node for node in workflow["nodes"] if node["type"] == "Note"]
        assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 100


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_node_types_are_ours_or_core(pack, path):
    for node in load(path)["nodes"]:
        assert (node["type"] in pack.NODE_CLASS_MAPPINGS or node["type"] in CORE_NODES
                or node["type"] in FRONTEND_ONLY), node["type"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_links_connect_matching_types(pack, path):
    workflow = load(path)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len({link[0] for link in workflow["links"]}) == len(workflow["links"])
    for link_id, origin, origin_slot, target, target_slot, link_type in workflow["links"]:
        out_type = node_spec(pack, nodes[origin]["type"])[1][origin_slot]
        slot = nodes[target]["inputs"][target_slot]
        in_spec = {name: kind for name, kind, _ in node_spec(pack, nodes[target]["type"])[0]}
        assert out_type == link_type == slot["type"] == in_spec[slot["name"]], (link_id, out_type, slot)
        assert slot["link"] == link_id
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
    # every required socket input is connected
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        required = cls.INPUT_TYPES()["required"] if cls else {n: (k, o) for n, k, o in CORE_NODES[node["type"]][0]}
        linked = {slot["name"] for slot in node["inputs"] if slot.get("link") is not None}
        for name, value in required.items():
            if not is_widget(value[0], value[1] if len(value) > 1 else {}):
                assert name in linked, (node["type"], name)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_widgets_values_follow_widget_order(pack, path):
    for node in load(path)["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        layout = widget_layout(pack, node["type"])
        values = node.get("widgets_values", [])
        assert len(values) == len(layout), (node["type"], values, [w[0] for w in layout])
        for (name, kind, options), value in zip(layout, values):
            where = (node["type"], name, value)
            if kind == "_control":
                assert value in ("fixed", "increment", "decrement", "randomize"), where
            elif kind == "_upload":
                assert value == "image", where
            elif kind == "FILE" or (isinstance(kind, list) and (name in FILE_WIDGETS or kind in ([], [""]))):
                assert isinstance(value, str) and value, where
            elif isinstance(kind, list):
                assert value in kind, where
            elif kind == "BOOLEAN":
                assert isinstance(value, bool), where
            elif kind == "STRING":
                assert isinstance(value, str), where
            else:
                assert isinstance(value, (int, float)) and not isinstance(value, bool), where
                if kind == "INT":
                    assert value == int(value), where
                assert options.get("min", -np.inf) <= value <= options.get("max", np.inf), where


# LiteGraph's geometry (ComfyUI frontends 1.27-1.58): the title bar sits above ``pos``; every socket row and
# every widget row takes about 20-24 px. Nodes that draw images (previews while PTI runs, loaded or saved
# images) need room below their widgets, or they grow over their neighbours during a run.
TITLE_HEIGHT, SLOT_HEIGHT, WIDGET_HEIGHT, MARGIN = 30, 20, 24, 10
IMAGE_ROOM = 220
DRAWS_IMAGES = {"PTI_Invert", "PTI_PivotalTune", "PreviewImage", "SaveImage", "LoadImage"}


def needed_height(pack, node: dict) -> int:
    """Returns the body height a node needs for its sockets, widgets and (where it draws one) an image."""
    if node["type"] in FRONTEND_ONLY:
        return 60
    spec, outputs = node_spec(pack, node["type"])
    sockets = [name for name, kind, options in spec if not is_widget(kind, options)]
    rows = max(len(sockets), len(outputs))
    height = rows * SLOT_HEIGHT + len(widget_layout(pack, node["type"])) * WIDGET_HEIGHT + MARGIN
    return height + (IMAGE_ROOM if node["type"] in DRAWS_IMAGES else 0)


def node_box(node: dict) -> tuple[float, float, float, float]:
    """Returns (left, top, right, bottom) of a node as drawn, title bar included."""
    (x, y), (w, h) = node["pos"], node["size"]
    return (x, y - TITLE_HEIGHT, x + w, y + h)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_nodes_have_room_and_never_overlap(pack, path):
    nodes = load(path)["nodes"]
    for node in nodes:
        assert node["size"][1] >= needed_height(pack, node), (node["id"], node["type"], node["size"],
                                                               needed_height(pack, node))
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            la, ta, ra, ba = node_box(a)
            lb, tb, rb, bb = node_box(b)
            apart = ra + MARGIN <= lb or rb + MARGIN <= la or ba + MARGIN <= tb or bb + MARGIN <= ta
            assert apart, f"{path.name}: node {a['id']} {a['type']} overlaps node {b['id']} {b['type']}"


def test_overlap_check_bites(pack):
    """The check above fails on the layout the first releases shipped (Load Upscale Model over Apply Direction)."""
    a = {"id": 8, "type": "PTI_ApplyDirection", "pos": [1050, 0], "size": [310, 443]}
    b = {"id": 9, "type": "UpscaleModelLoader", "pos": [1050, 330], "size": [310, 83]}
    la, ta, ra, ba = node_box(a)
    lb, tb, rb, bb = node_box(b)
    assert not (ra + MARGIN <= lb or rb + MARGIN <= la or ba + MARGIN <= tb or bb + MARGIN <= ta)
    assert needed_height(pack, {"type": "PTI_Invert"}) > 300  # the preview's room is counted


MODEL_LOADERS = {"PTI_LoadStyleGAN": "stylegan", "PTI_LoadDirection": "stylegan_directions",
                 "PTI_LoadCLIP": "clip_vision", "PTI_StyleCLIPDirection": "stylegan_directions"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_templates_declare_the_model_files_they_need(pack, path):
    """Every file a template's loaders name that does not ship with the pack carries the entry (name, url,
    folder) the frontend uses to flag and offer a missing file, on the node and in the workflow's list."""
    workflow = load(path)
    shipped = {p.name for p in (REPO / "pti_core" / "data").rglob("*.safetensors")}
    declared = []
    for node in workflow["nodes"]:
        if node["type"] not in MODEL_LOADERS:
            continue
        name = node["widgets_values"][0]
        if name in shipped:
            continue
        (entry,) = node["properties"]["models"]
        assert entry["name"] == name and entry["directory"] == MODEL_LOADERS[node["type"]], entry
        assert entry["url"].startswith("https://") and entry["url"].rstrip("/").endswith(Path(name).name)
        declared.append(entry)
    assert workflow.get("models", []) == declared


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_api_copy_is_the_ui_workflow(pack, path):
    assert ui_to_api(pack, load(path)) == load(API_DIR / path.name)


# ----------------------------------------------------------------------------- executor

class CoreStandIns:
    """Minimal stand-ins for the ComfyUI core nodes the workflows use (same inputs/outputs)."""

    def __init__(self, input_dir: Path, output_dir: Path):
        self.input_dir, self.output_dir = input_dir, output_dir
        self.saved: list[torch.Tensor] = []
        self.previews: list[torch.Tensor] = []

    def LoadImage(self, image):
        pil = Image.open(self.input_dir / image).convert("RGB")
        x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0)[None]  # [1, H, W, 3]
        return (x, torch.zeros(x.shape[:3]))

    def ImageScaleBy(self, image, upscale_method, scale_by):
        height, width = round(image.shape[1] * scale_by), round(image.shape[2] * scale_by)
        if upscale_method == "lanczos":
            frames = [Image.fromarray((frame.numpy() * 255).round().astype(np.uint8)).resize(
                (width, height), Image.LANCZOS) for frame in image]
            return (torch.stack([torch.from_numpy(np.asarray(f, dtype=np.float32) / 255.0) for f in frames]),)
        mode = {"nearest-exact": "nearest-exact", "area": "area"}.get(upscale_method, upscale_method)
        x = F.interpolate(image.movedim(-1, 1), size=(height, width), mode=mode)
        return (x.movedim(1, -1).clamp(0, 1).contiguous(),)

    def UpscaleModelLoader(self, model_name):
        # an identity-initialised Compact model upscales exactly like nearest neighbour
        return ({"scale": int(re.match(r"(\d+)x", model_name).group(1))},)

    def ImageUpscaleWithModel(self, upscale_model, image):
        s = upscale_model["scale"]
        return (image.repeat_interleave(s, 1).repeat_interleave(s, 2),)

    def SaveImage(self, images, filename_prefix):
        for index, frame in enumerate(images):
            path = self.output_dir / f"{filename_prefix}_{index:05d}_.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((frame.numpy() * 255).round().astype(np.uint8)).save(path)
        self.saved.append(images)
        return {}

    def PreviewImage(self, images):
        self.previews.append(images)
        return {}


def execute(pack, prompt: dict, core: CoreStandIns) -> dict:
    """Runs an API-format prompt: each node once, inputs resolved from its sources; returns outputs."""
    outputs: dict[str, object] = {}

    def run(node_id: str):
        if node_id in outputs:
            return outputs[node_id]
        node = prompt[node_id]
        kwargs = {name: run(value[0])[value[1]] if isinstance(value, list) else value
                  for name, value in node["inputs"].items()}
        if node["class_type"] in pack.NODE_CLASS_MAPPINGS:
            cls = pack.NODE_CLASS_MAPPINGS[node["class_type"]]
            with torch.inference_mode():  # as ComfyUI's executor runs nodes
                result = getattr(cls(), cls.FUNCTION)(**kwargs)
            if isinstance(result, dict):
                result = result.get("result", ())
            assert len(result) == len(cls.RETURN_TYPES)
        else:
            result = getattr(core, node["class_type"])(**kwargs)
        outputs[node_id] = result
        return result

    for node_id in prompt:
        run(node_id)
    return outputs


# Per workflow: the tiny model and few optimisation steps with download-free perceptual backbones.
TINY = {"PTI_LoadStyleGAN": {"model_name": "tiny.safetensors"},
        "PTI_AlignFace": {"output_size": 16, "supersample": 0},
        "PTI_Invert": {"steps": 3, "perceptual": "random-alex"},
        "PTI_PivotalTune": {"steps": 3, "perceptual": "random-alex", "learning_rate": 3e-3}}


def tiny_prompt(name: str) -> dict:
    prompt = load(API_DIR / f"{name}.json")
    for node in prompt.values():
        node["inputs"].update(TINY.get(node["class_type"], {}))
    return prompt


def test_generate_and_edit_runs(pack, tiny_setup):
    tmp_path, inputs = tiny_setup
    core = CoreStandIns(inputs, tmp_path / "output")
    outputs = execute(pack, tiny_prompt("stylegan_generate_and_edit"), core)
    (frames,) = core.saved
    assert frames.shape == (8, 16, 16, 3) and frames.dtype == torch.float32 and frames.is_contiguous()
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1
    assert len(list((tmp_path / "output" / "PTI").glob("age_sweep_*.png"))) == 8
    assert all(float((frames[i + 1] - frames[i]).abs().max()) > 0 for i in range(7))  # the sweep moves
    # the sweep's latents are the generated latent moved along the direction, frame by frame
    ws = outputs["5"][1]["ws"]
    steps = ws[1:] - ws[:-1]
    assert torch.allclose(steps, steps[:1].expand_as(steps), atol=1e-5)
    (rendered,) = pack.NODE_CLASS_MAPPINGS["PTI_RenderLatent"]().execute(
        outputs["1"][0], outputs["2"][1], "const")
    assert torch.equal(rendered, core.previews[0])  # Generate's images are its latents rendered


def _photo(inputs: Path) -> None:
    Image.open(realworld("photos", "astronaut.png")).convert("RGB").save(inputs / "photo.png")


def test_edit_photo_runs(pack, tiny_setup):
    tmp_path, inputs = tiny_setup
    _photo(inputs)
    core = CoreStandIns(inputs, tmp_path / "output")
    outputs = execute(pack, tiny_prompt("pti_edit_photo"), core)
    photo = outputs["1"][0]
    (pasted,) = outputs["9"]
    assert pasted.shape == photo.shape
    assert torch.allclose(pasted[:, 470:, :40], photo[:, 470:, :40], atol=1e-6)  # far from the face: untouched
    assert float((pasted - photo).abs().max()) > 0.05  # the face was replaced
    (saved,) = core.saved
    assert saved.shape == (1, 1024, 1024, 3)  # ImageScaleBy x2 of the 512 px photo
    (reconstruction,) = core.previews
    aligned = outputs["2"][0]
    # pivotal tuning reproduces the aligned face better than the inversion alone
    assert float((outputs["5"][1] - aligned).pow(2).mean()) < float((outputs["4"][1] - aligned).pow(2).mean())
    assert torch.equal(reconstruction, outputs["5"][1])


def test_edit_upscale_runs(pack, tiny_setup):
    tmp_path, inputs = tiny_setup
    _photo(inputs)
    core = CoreStandIns(inputs, tmp_path / "output")
    outputs = execute(pack, tiny_prompt("pti_edit_upscale"), core)
    (saved,) = core.saved
    edited = outputs["8"][0]
    assert edited.shape == (1, 16, 16, 3)
    assert saved.shape == (1, 64, 64, 3)  # "4x-..." upscale model
    assert torch.equal(saved[:, ::4, ::4], edited)


def test_try_builtin_model_runs_with_the_shipped_model_and_its_template(pack, tmp_path, monkeypatch):
    """The no-download workflow: the shipped model and its yaw direction are found in the pack's own
    folders, Align Face uses the model's face template, and the sweep gives 8 pasted frames."""
    monkeypatch.setenv("PTI_MODELS_DIR", str(tmp_path / "empty_models"))  # nothing but the pack's files
    inputs = tmp_path / "input"
    inputs.mkdir()
    _photo(inputs)
    prompt = load(API_DIR / "pti_try_builtin_model.json")
    prompt["4"]["inputs"]["steps"] = 3  # few steps: this checks wiring, the quality tests live elsewhere
    prompt["5"]["inputs"]["steps"] = 3
    core = CoreStandIns(inputs, tmp_path / "output")
    outputs = execute(pack, prompt, core)
    G = outputs["3"][0]
    template = pack.pti_core.align.generator_template(G)
    assert template != pack.pti_core.align.FFHQ_TEMPLATE  # the distilled model frames faces its own way
    face = outputs["2"][1]
    assert face.template == template and outputs["2"][0].shape == (1, 64, 64, 3)
    (saved,) = core.saved
    assert saved.shape == (8, 512, 512, 3)  # 8 sweep frames pasted into the 512 px photo
    assert all(float((saved[i + 1] - saved[i]).abs().max()) > 0 for i in range(7))


def test_no_download_workflow_carries_the_built_in_models_settings():
    """One source for the built-in model's settings: the CLI reads pti_core.presets.BUILTIN_MODEL, the
    no-download template carries the same values in its widgets (and its sweep spans the default strengths)."""
    from pti_core.presets import BUILTIN_MODEL

    prompt = load(API_DIR / "pti_try_builtin_model.json")
    nodes = {node["class_type"]: node["inputs"] for node in prompt.values()}
    invert, tune, apply = nodes["PTI_Invert"], nodes["PTI_PivotalTune"], nodes["PTI_ApplyDirection"]
    assert (invert["steps"], invert["learning_rate"], invert["l2_weight"], invert["perceptual"]) == (
        BUILTIN_MODEL.inversion_steps, BUILTIN_MODEL.inversion_lr, BUILTIN_MODEL.inversion_l2_weight,
        BUILTIN_MODEL.perceptual)
    assert (tune["steps"], tune["learning_rate"], tune["l2_weight"], tune["lpips_threshold"], tune["perceptual"]) == (
        BUILTIN_MODEL.tuning_steps, BUILTIN_MODEL.tuning_lr, BUILTIN_MODEL.l2_weight, BUILTIN_MODEL.lpips_threshold,
        BUILTIN_MODEL.perceptual)
    assert (apply["strength_from"], apply["strength_to"]) == (BUILTIN_MODEL.edit_strengths[0],
                                                            BUILTIN_MODEL.edit_strengths[-1])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_template_has_a_thumbnail(path):
    """ComfyUI's Templates panel shows ``<name>.jpg`` beside a template (a 404 and a placeholder card without)."""
    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), thumbnail.name
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and min(image.size) >= 256
