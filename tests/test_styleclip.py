"""StyleCLIP global directions: relevance statistics, text directions, StyleSpace edits, files, CLIP loading.

Everything runs on a tiny random StyleGAN2 (8 px, 8 channels) and a randomly initialised CLIP of
open_clip's real ``CLIP`` architecture with tiny widths; no weights are downloaded.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_generator

from pti_core import clip_models, styleclip
from pti_core.directions import Direction
from pti_core.errors import CheckpointError, ConfigError, DirectionError, MissingFileError, UnsafeCheckpointError
from pti_core.generators.stylegan2 import Generator

TINY_CLIP_CFG = {"embed_dim": 16, "quick_gelu": True,
                 "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
CONFIG = styleclip.RelevanceConfig(samples=3, std_samples=40, seed=7, delta=5.0, batch_size=24)


def small_generator(seed: int = 0, resolution: int = 8) -> Generator:
    torch.manual_seed(seed)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3,
                  mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 32, "channel_max": 4})
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def G():
    return small_generator(0)


@pytest.fixture(scope="module")
def clip():
    return clip_models.build_clip(TINY_CLIP_CFG, seed=0)


@pytest.fixture(scope="module")
def stats(G, clip):
    return styleclip.compute_relevance(G, clip, config=CONFIG)


def brute_force_relevance(G, clip, config):
    """Independent recomputation: per channel, per sample, one image at a time."""
    gen = torch.Generator().manual_seed(config.seed)
    z = torch.randn([config.std_samples, G.z_dim], generator=gen)
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=config.truncation_psi, truncation_cutoff=config.truncation_cutoff)
        all_styles = G.synthesis.compute_styles(ws)
    mean = {k: v.double().mean(0).float() for k, v in all_styles.items()}
    std = {k: v.double().std(0, unbiased=True).float() for k, v in all_styles.items()}
    mean_rgb = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std_rgb = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def embed(image):
        x = F.interpolate((image + 1) / 2, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
        e = clip.model.encode_image((x - mean_rgb) / std_rgb)[0]
        return e / e.norm()

    rows = []
    for layer, styles in all_styles.items():
        if "torgb" in layer:
            continue
        for channel in range(styles.shape[1]):
            changes = []
            for i in range(config.samples):
                w = ws[i:i + 1]
                embeddings = []
                for sign in (-1, 1):
                    s = {k: v[i:i + 1].clone() for k, v in all_styles.items()}
                    s[layer][0, channel] = mean[layer][channel] + sign * config.delta * std[layer][channel]
                    with torch.no_grad():
                        embeddings.append(embed(G.synthesis(w, styles=s, noise_mode="const")))
                d = embeddings[1] - embeddings[0]
                changes.append(d / d.norm())
            m = torch.stack(changes).mean(0)
            rows.append(m / m.norm())
    return torch.stack(rows), mean, std


def test_relevance_equals_brute_force(G, clip, stats):
    expected, mean, std = brute_force_relevance(G, clip, CONFIG)
    assert stats.complete and stats.rows == 3 * 4 and stats.relevance.shape == (12, 16)
    assert [n for n, _ in stats.layers] == ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb"]
    assert stats.perturbed == ("b4.conv1", "b8.conv0", "b8.conv1")
    for name, _ in stats.layers:
        torch.testing.assert_close(stats.style_mean[name], mean[name], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats.style_std[name], std[name], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.relevance, expected, atol=2e-5, rtol=0)
    # rows are unit vectors that differ between channels (the perturbation did something)
    torch.testing.assert_close(stats.relevance.norm(dim=1), torch.ones(12))
    assert float(torch.cdist(stats.relevance, stats.relevance).max()) > 0.1


def test_text_direction_and_beta_threshold(G, clip, stats):
    delta_t = styleclip.text_direction(clip, "a smiling face", "a face", templates="photo")
    # independent: template embeddings normalised, averaged, normalised; difference normalised
    def prompt(text):
        prompts = [t.format(text) for t in styleclip._templates("photo")]
        e = F.normalize(clip.model.encode_text(clip.tokenize(prompts)), dim=-1).mean(0)
        return e / e.norm()
    with torch.no_grad():
        expected = prompt("a smiling face") - prompt("a face")
    torch.testing.assert_close(delta_t, expected / expected.norm(), atol=1e-6, rtol=0)

    relevance = stats.relevance @ delta_t
    beta = float(relevance.abs().median())
    direction = styleclip.global_direction(stats, delta_t, beta=beta)
    assert isinstance(direction, Direction) and direction.space == "s" and direction.vectors is None
    flat = torch.cat([direction.styles[n][0] for n in stats.perturbed])
    below = relevance.abs() < beta
    assert bool(below.any()) and bool((~below).any())
    assert bool((flat[below] == 0).all()), "channels under beta must be exactly zero"
    assert bool((flat[~below] != 0).all())
    std = torch.cat([stats.style_std[n] for n in stats.perturbed])
    kept = torch.where(below, torch.zeros_like(relevance), relevance)
    torch.testing.assert_close(flat, kept / kept.abs().max() * std, atol=1e-7, rtol=1e-6)
    assert styleclip.channels_changed(direction) == int((~below).sum())
    assert not any("torgb" in n for n in direction.styles)
    with pytest.raises(DirectionError, match="lower beta"):
        styleclip.global_direction(stats, delta_t, beta=float(relevance.abs().max()) + 1e-3)
    with pytest.raises(ConfigError, match="same point"):
        styleclip.text_direction(clip, "a face", "a face")


def test_style_edit_zero_is_exact_and_plus_minus_returns(G, clip, stats):
    direction = styleclip.styleclip_direction(stats, clip, "grey hair", "hair", beta=0.0)
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(3)), None)
    with torch.no_grad():
        reference = G.synthesis(ws, noise_mode="const")
        assert torch.equal(styleclip.apply_style_direction(G, ws, direction, 0.0), reference)
        edited = styleclip.apply_style_direction(G, ws, direction, 3.0)
        assert float((edited - reference).abs().max()) > 1e-3
        styles = G.synthesis.compute_styles(ws)
    forward = styleclip.edit_styles(styles, [(direction, 2.5)])
    back = styleclip.edit_styles(forward, [(direction, -2.5)])
    for name in styles:
        torch.testing.assert_close(back[name], styles[name], atol=1e-6, rtol=0)
        assert ("torgb" in name) == torch.equal(forward[name], styles[name])
    # two directions sum
    other = styleclip.styleclip_direction(stats, clip, "a surprised face", "a face", beta=0.0)
    both = styleclip.edit_styles(styles, [(direction, 1.0), (other, -2.0)])
    for name in direction.styles:
        torch.testing.assert_close(both[name], styles[name] + direction.styles[name] - 2 * other.styles[name])
    # a direction for another generator is refused
    with pytest.raises(DirectionError, match="another generator"):
        styleclip.apply_style_direction(tiny_generator(1, resolution=8), torch.zeros(1, 4, 16), direction, 1.0)


def test_incomplete_statistics_resume_and_file_round_trip(G, clip, stats, tmp_path):
    saved = []
    partial = styleclip.compute_relevance(G, clip, config=CONFIG, max_channels=5,
                                          checkpoint=lambda s: saved.append(s), checkpoint_every=4)
    assert not partial.complete and partial.channels_done == 5 and saved[-1].channels_done == 5
    with pytest.raises(DirectionError, match="incomplete"):
        styleclip.global_direction(partial, torch.ones(16) / 4, beta=0.1)
    path = styleclip.save_statistics(partial, tmp_path / "partial_styleclip.safetensors")
    loaded = styleclip.load_statistics(path, G)
    assert loaded.channels_done == 5 and torch.equal(loaded.relevance, partial.relevance)
    resumed = styleclip.compute_relevance(G, clip, resume=loaded)
    assert resumed.complete
    # batch size (here smaller than one channel's 2 * samples images) does not change the result
    small_batches = styleclip.compute_relevance(G, clip, config=replace(CONFIG, batch_size=4))
    torch.testing.assert_close(small_batches.relevance, stats.relevance, atol=5e-6, rtol=0)
    torch.testing.assert_close(resumed.relevance, stats.relevance, atol=5e-6, rtol=0)
    full = styleclip.load_statistics(styleclip.save_statistics(resumed, tmp_path / "full.safetensors"), G)
    assert full.layers == stats.layers and full.meta["clip_fingerprint"] == clip.fingerprint
    for name, _ in stats.layers:
        assert torch.equal(full.style_std[name], resumed.style_std[name])
    with pytest.raises(DirectionError, match="another generator"):
        styleclip.load_statistics(path, small_generator(0, resolution=16))
    with pytest.raises(ConfigError, match="another CLIP"):
        styleclip.compute_relevance(G, clip_models.build_clip(TINY_CLIP_CFG, seed=1), resume=loaded)


def write_published(folder, stats, *, extra_row=False):
    """Writes StyleCLIP's layout: fs3.npy [rows, D] + S_mean_std, a pickle of (mean list, std list)."""
    folder.mkdir(parents=True, exist_ok=True)
    fs3 = stats.relevance.numpy()
    if extra_row:
        fs3 = np.concatenate([fs3, fs3[:1]])
    np.save(folder / "fs3.npy", fs3)
    names = [n for n, _ in stats.layers]
    mean = [stats.style_mean[n].numpy().astype(np.float32) for n in names]
    std = [stats.style_std[n].numpy().astype(np.float32) for n in names]
    with open(folder / "S_mean_std", "wb") as handle:
        pickle.dump([mean, std], handle, protocol=2)
    return folder / "fs3.npy"


class _Evil:
    def __reduce__(self):
        return (print, ("executed!",))


def test_published_statistics_format(G, clip, stats, tmp_path, monkeypatch):
    monkeypatch.setattr(styleclip, "PUBLISHED_STD_CONFIG", replace(styleclip.PUBLISHED_STD_CONFIG, std_samples=2000))
    fs3 = write_published(tmp_path / "npy" / "ffhq", stats)
    published = styleclip.load_statistics(fs3, G)
    assert published.complete and published.layers == stats.layers
    assert torch.equal(published.relevance, stats.relevance)
    delta_t = styleclip.text_direction(clip, "a smiling face", "a face", templates="none")
    ours = styleclip.global_direction(stats, delta_t, beta=0.05)
    theirs = styleclip.global_direction(published, delta_t, beta=0.05)
    for name in ours.styles:
        assert torch.equal(ours.styles[name], theirs.styles[name])
    # wrong generator: different resolution -> different number of style layers
    with pytest.raises(DirectionError, match="another generator"):
        styleclip.load_published_statistics(fs3, small_generator(0, resolution=16))
    # wrong layout: one row too many
    bad = write_published(tmp_path / "bad_rows", stats, extra_row=True)
    with pytest.raises(DirectionError, match="13 channel rows.*12"):
        styleclip.load_published_statistics(bad, G)
    # wrong layout: S_mean_std of a generator with other channel counts
    with pytest.raises(DirectionError, match="12 channel rows.*96"):
        styleclip.load_published_statistics(fs3, tiny_generator(0, resolution=8))  # 32 channels per layer
    mean = [np.zeros(5 if i == 0 else c, np.float32) for i, (_, c) in enumerate(stats.layers)]
    with open(fs3.parent / "S_mean_std", "wb") as handle:
        pickle.dump((mean, mean), handle)
    with pytest.raises(DirectionError, match="5 channels for b4.conv1"):
        styleclip.load_published_statistics(fs3, G)
    # S_mean_std is made locally by StyleCLIP (not published): without it, the std is measured from G
    (tmp_path / "lonely").mkdir()
    np.save(tmp_path / "lonely" / "fs3.npy", stats.relevance.numpy())
    measured = styleclip.load_published_statistics(tmp_path / "lonely" / "fs3.npy", G)
    _, std = styleclip.style_mean_std(G, config=styleclip.PUBLISHED_STD_CONFIG)
    assert "measured from the generator" in measured.meta["source"]
    for name, _ in stats.layers:
        assert torch.equal(measured.style_std[name], std[name])
        torch.testing.assert_close(measured.style_std[name], stats.style_std[name], rtol=0.5, atol=0.05)
    with pytest.raises(MissingFileError, match="global_directions/npy/ffhq"):
        styleclip.load_published_statistics(tmp_path / "nowhere" / "fs3.npy", G)
    # a pickle that would run code is refused unread
    with open(fs3.parent / "S_mean_std", "wb") as handle:
        pickle.dump([_Evil(), []], handle)
    with pytest.raises(UnsafeCheckpointError, match="builtins.print"):
        styleclip.load_published_statistics(fs3, G)


def test_published_ffhq_layout_size():
    """StyleCLIP's FFHQ fs3.npy has 6048 rows and S_mean_std 26 layers: our 1024 px layout agrees."""
    big = Generator(z_dim=512, w_dim=512, img_resolution=1024, img_channels=3)
    layers = big.synthesis.style_layers()
    assert len(layers) == 26
    assert sum(affine.weight.shape[0] for name, _, affine in layers if not styleclip.is_torgb(big, name)) == 6048


def test_load_clip_safetensors_with_config(clip, tmp_path):
    from safetensors.torch import save_file
    folder = tmp_path / "clip_vision" / "tiny"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    loaded = clip_models.load_clip(folder / "open_clip_model.safetensors")
    assert loaded.fingerprint == clip.fingerprint
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), clip.encode_image(images))
        assert torch.equal(loaded.encode_text(["a face"]), clip.encode_text(["a face"]))
    # .bin with torch.save of the state dict (open_clip training checkpoint layout)
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in clip.model.state_dict().items()}},
               folder / "epoch_1.pt")
    assert clip_models.load_clip(folder / "epoch_1.pt").fingerprint == clip.fingerprint
    # no config and no architecture: a clear error
    lonely = tmp_path / "lonely.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, lonely)
    with pytest.raises(ConfigError, match="architecture"):
        clip_models.load_clip(lonely)
    with pytest.raises(ConfigError, match="does not fit"):
        clip_models.load_clip(lonely, architecture="RN50")
    with pytest.raises(MissingFileError, match="clip_vision"):
        clip_models.load_clip(tmp_path / "ViT-B-32.pt")
    # ComfyUI's clip_vision files (transformers layout, image tower only) are refused with the reason
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(4, 3, 2, 2)}, tmp_path / "cv.safetensors")
    with pytest.raises(ConfigError, match="both towers"):
        clip_models.load_clip(tmp_path / "cv.safetensors")


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_load_openai_torchscript_archive(tmp_path):
    """OpenAI's ViT-B-32.pt is a TorchScript archive: its tensors are read without loading its code."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    torch.manual_seed(0)
    model = CLIP(16, vision_cfg=CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32),
                 text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
                 quick_gelu=True).eval()
    traced = torch.jit.trace_module(model, {"encode_image": (torch.randn(1, 3, 32, 32),)})  # keeps every weight
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(traced, str(path))
    loaded = clip_models.load_clip(path)
    assert loaded.name.startswith("OpenAI")
    reference = clip_models.ClipModel(model, name="reference")
    assert loaded.fingerprint == reference.fingerprint
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), reference.encode_image(images))
    # an archive whose data.pkl names anything outside the allow-list is refused
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(_Evil(), protocol=2)
            dst.writestr(item, data)
    with pytest.raises(UnsafeCheckpointError, match="not allowed"):
        clip_models.load_clip(evil)


def test_cli_compute_resume_and_import(G, clip, stats, tmp_path, capsys):
    from safetensors.torch import save_file

    from pti_core.__main__ import main
    from pti_core.generators.checkpoints import save_generator
    model = save_generator(G, tmp_path / "G.safetensors")
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, tmp_path / "open_clip_model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    out = tmp_path / "styleclip_tiny.safetensors"
    common = ["styleclip-stats", "--model", str(model), "--clip", str(tmp_path / "open_clip_model.safetensors"),
              "--samples", "3", "--std-samples", "40", "--seed", "7", "--batch-size", "24", "--device", "cpu",
              "--out", str(out)]
    assert main(common + ["--max-channels", "7", "--checkpoint-every", "3"]) == 3
    assert styleclip.load_statistics(out, G).channels_done == 7
    assert main(common) == 2  # exists, neither --resume nor --force
    assert "--resume" in capsys.readouterr().err
    assert main(common + ["--resume"]) == 0
    result = styleclip.load_statistics(out, G)
    assert result.complete
    torch.testing.assert_close(result.relevance, stats.relevance, atol=5e-6, rtol=0)
    fs3 = write_published(tmp_path / "published", stats)
    converted = tmp_path / "styleclip_published.safetensors"
    assert main(["styleclip-stats", "--model", str(model), "--import-published", str(fs3), "--out",
                 str(converted)]) == 0
    assert torch.equal(styleclip.load_statistics(converted, G).relevance, stats.relevance)


def test_nodes(pack, G, clip, stats, tmp_path, monkeypatch):
    from safetensors.torch import save_file
    monkeypatch.setenv("PTI_MODELS_DIR", str(tmp_path))
    folder = tmp_path / "clip_vision" / "tiny"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    styleclip.save_statistics(stats, tmp_path / "stylegan_directions" / "styleclip_tiny.safetensors")
    nodes = pack.NODE_CLASS_MAPPINGS
    load, make = nodes["PTI_LoadCLIP"], nodes["PTI_StyleCLIPDirection"]
    for cls in (load, make):
        assert cls.DESCRIPTION and cls.CATEGORY == "PTI" and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        assert all("tooltip" in spec[1] for spec in cls.INPUT_TYPES()["required"].values())
    assert load.INPUT_TYPES()["required"]["clip_name"][0] == ["tiny/open_clip_model.safetensors"]
    assert tuple(load.INPUT_TYPES()["required"]["architecture"][0]) == clip_models.COMMON_ARCHITECTURES
    assert "styleclip_tiny.safetensors" in make.INPUT_TYPES()["required"]["statistics"][0]
    assert make.IS_CHANGED(statistics="styleclip_tiny.safetensors").count(":") == 1
    assert make.IS_CHANGED(statistics="styleclip_ffhq/fs3.npy") == "missing:styleclip_ffhq/fs3.npy"
    (loaded,) = load().execute("tiny/open_clip_model.safetensors", "auto")
    assert loaded.fingerprint == clip.fingerprint
    (direction,) = make().execute(G, loaded, "styleclip_tiny.safetensors", "a smiling face", "a face",
                                  beta=0.05, alpha=2.0)
    expected = styleclip.styleclip_direction(stats, clip, "a smiling face", "a face", beta=0.05)
    assert direction.space == "s"
    for name in expected.styles:
        torch.testing.assert_close(direction.styles[name], 2.0 * expected.styles[name])
    with pytest.raises(ValueError, match="lower beta"):
        make().execute(G, loaded, "styleclip_tiny.safetensors", "a smiling face", "a face", beta=1.0, alpha=2.0)
    # Apply Direction renders StyleSpace directions: strength 0 = the unedited image, 1 = alpha
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(5)), None)
    latent = {"ws": ws.detach(), "space": "w"}
    apply = nodes["PTI_ApplyDirection"]()
    zero, same_latent = apply.execute(G, latent, direction, 0.0)
    assert torch.equal(same_latent["ws"], latent["ws"])
    with torch.no_grad():
        unedited = pack.pti_core.imageio.nchw_to_comfy(G.synthesis(ws, noise_mode="const"))
        edited = pack.pti_core.imageio.nchw_to_comfy(styleclip.apply_style_direction(G, ws, direction, 1.0))
    assert torch.equal(zero, unedited)
    one, _ = apply.execute(G, latent, direction, 1.0)
    torch.testing.assert_close(one, edited, atol=1e-6, rtol=0)
    assert float((one - zero).abs().max()) > 1e-3
    # the published FFHQ statistics are listed from the manifest; picking them while missing says where to get them
    published = [e["file"] for e in styleclip.published_statistics_entries()]
    assert "styleclip_ffhq/fs3.npy" in published
    assert set(published) <= set(make.INPUT_TYPES()["required"]["statistics"][0])
    with pytest.raises(ValueError, match=r"orpatashnik/StyleCLIP/main/global_directions/npy/ffhq/fs3\.npy"):
        make().execute(G, loaded, "styleclip_ffhq/fs3.npy", "a smiling face", "a face")
    # compute now: statistics measured in the node equal the library's (same config)
    (computed,) = make().execute(G, loaded, pack.nodes.styleclip.COMPUTE_NOW, "a smiling face", "a face",
                                 beta=0.0, alpha=1.0, samples=2)
    assert computed.space == "s" and set(computed.styles) == set(stats.perturbed)
    cached = list((tmp_path / "stylegan_directions" / "styleclip_cache").glob("styleclip_*_n2.safetensors"))
    assert len(cached) == 1 and styleclip.load_statistics(cached[0], G).complete
    assert f"styleclip_cache/{cached[0].name}" in make.INPUT_TYPES()["required"]["statistics"][0]


def test_stylegan3_generator(clip):
    """StyleGAN3's StyleSpace works the same; its ToRGB layer (L{n}_{R}_3, is_torgb) is not perturbed."""
    from pti_core.generators.stylegan3 import Generator as Generator3
    torch.manual_seed(0)
    G3 = Generator3(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=4,
                    num_layers=2, num_critical=1, margin_size=2, mapping_kwargs={"num_layers": 2})
    G3 = G3.eval().requires_grad_(False)
    names = [n for n, _ in styleclip.style_layout(G3)]
    assert styleclip.perturbed_layers(G3) == tuple(names[:-1])
    stats3 = styleclip.compute_relevance(G3, clip, config=styleclip.RelevanceConfig(samples=2, std_samples=20))
    assert stats3.complete and stats3.rows == sum(c for n, c in stats3.layers[:-1])
    direction = styleclip.styleclip_direction(stats3, clip, "a smiling face", "a face", beta=0.0)
    ws = G3.mapping(torch.randn(1, 8, generator=torch.Generator().manual_seed(0)), None)
    with torch.no_grad():
        assert torch.equal(styleclip.apply_style_direction(G3, ws, direction, 0.0), G3.synthesis(ws))
        assert float((styleclip.apply_style_direction(G3, ws, direction, 5.0) - G3.synthesis(ws)).abs().max()) > 0


def _reference_mapper_output(state, ws, groups):
    """Independent re-statement of StyleCLIP's LevelsMapper forward (PixelNorm dim 1, EqualLinear x4)."""
    out = []
    for name, rows in groups:
        x = ws[:, rows]
        if name is None:
            out.append(torch.zeros_like(x))
            continue
        x = x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)
        for i in range(1, 5):
            weight, bias = state[f"mapper.{name}.mapping.{i}.weight"], state[f"mapper.{name}.mapping.{i}.bias"]
            x = F.linear(x, weight * (1 / weight.shape[1] ** 0.5) * 0.01)
            x = F.leaky_relu(x + (bias * 0.01).view(1, 1, -1), negative_slope=0.2) * 2 ** 0.5
        out.append(x)
    return torch.cat(out, dim=1)


def write_mapper(path, seed=0):
    """Writes a mapper checkpoint in StyleCLIP's layout ({"state_dict", "opts"}, no fine mapper); returns the state."""
    gen = torch.Generator().manual_seed(seed)
    state = {"decoder.style.1.weight": torch.randn(8, 8, generator=gen)}  # mapper files also hold a generator
    for name in ("course_mapping", "medium_mapping"):  # --no_fine_mapper, as the published hair mappers
        for i in range(1, 5):
            state[f"mapper.{name}.mapping.{i}.weight"] = torch.randn(16, 16, generator=gen) / 0.01
            state[f"mapper.{name}.mapping.{i}.bias"] = torch.randn(16, generator=gen)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "opts": {"description": "mohawk hairstyle", "no_fine_mapper": True,
                                              "work_in_stylespace": False, "mapper_type": "LevelsMapper"}}, path)
    return state


def test_latent_mapper_checkpoint(tmp_path):
    state = write_mapper(tmp_path / "mohawk.pt")
    gen = torch.Generator().manual_seed(1)
    mapper = styleclip.load_mapper(tmp_path / "mohawk.pt")
    ws = torch.randn(3, 12, 16, generator=gen)
    expected = _reference_mapper_output(state, ws, [("course_mapping", slice(0, 4)),
                                                    ("medium_mapping", slice(4, 8)), (None, slice(8, None))])
    torch.testing.assert_close(mapper(ws), expected, atol=1e-5, rtol=1e-5)
    edited = styleclip.apply_mapper(mapper, ws, 1.0)
    torch.testing.assert_close(edited, ws + 0.1 * expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(edited[:, 8:], ws[:, 8:])  # no fine mapper: fine rows untouched
    assert torch.equal(styleclip.apply_mapper(mapper, ws, 0.0), ws)
    # a StyleSpace mapper, a file without mapper weights, and a missing file: clear errors
    torch.save({"state_dict": state, "opts": {"work_in_stylespace": True}}, tmp_path / "s.pt")
    with pytest.raises(CheckpointError, match="StyleSpace mapper"):
        styleclip.load_mapper(tmp_path / "s.pt")
    torch.save({"state_dict": {"decoder.x": torch.zeros(1)}, "opts": {}}, tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="no StyleCLIP W\\+ mapper"):
        styleclip.load_mapper(tmp_path / "none.pt")
    with pytest.raises(MissingFileError, match="styleclip_mappers"):
        styleclip.load_mapper(tmp_path / "afro.pt")
    with pytest.raises(ConfigError, match=r"num_ws, 16\], got \[1, 12, 8\]"):
        mapper(torch.zeros(1, 12, 8))


def test_mapper_node(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("PTI_MODELS_DIR", str(tmp_path))
    write_mapper(tmp_path / "stylegan_directions" / "styleclip_mappers" / "mohawk.pt")
    node = pack.NODE_CLASS_MAPPINGS["PTI_StyleCLIPMapper"]
    assert node.DESCRIPTION and len(node.OUTPUT_TOOLTIPS) == 1
    choices = node.INPUT_TYPES()["required"]["mapper_file"][0]
    assert "styleclip_mappers/mohawk.pt" in choices and "styleclip_mappers/afro.pt" in choices  # manifest
    ws = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(2))
    (latent,) = node().execute({"ws": ws, "space": "w"}, "styleclip_mappers/mohawk.pt", 0.5)
    mapper = styleclip.load_mapper(tmp_path / "stylegan_directions" / "styleclip_mappers" / "mohawk.pt")
    assert latent["space"] == "w+"
    torch.testing.assert_close(latent["ws"], styleclip.apply_mapper(mapper, ws, 0.5))
    with pytest.raises(ValueError, match=r"drive\.google\.com/uc\?id=1i5vAqo4z0I"):
        node().execute({"ws": ws, "space": "w"}, "styleclip_mappers/afro.pt", 1.0)

def test_styleclip_workflow_runs(pack, tiny_setup, clip, monkeypatch):
    """workflows/pti_styleclip_edit.json (API copy) runs end to end on a tiny generator and CLIP."""
    from safetensors.torch import save_file
    from test_workflows import CoreStandIns, _photo, execute, tiny_prompt

    from pti_core.generators.checkpoints import load_generator
    tmp_path, inputs = tiny_setup
    _photo(inputs)
    models = tmp_path / "models"
    folder = models / "clip_vision" / "tiny"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    # statistics in StyleCLIP's published layout at the template's path (values: random unit rows)
    G = load_generator(models / "stylegan" / "tiny.safetensors")
    rows = sum(c for n, c in styleclip.style_layout(G) if n in styleclip.perturbed_layers(G))
    relevance = F.normalize(torch.randn(rows, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    fake = styleclip.StyleStatistics(layers=styleclip.style_layout(G), perturbed=styleclip.perturbed_layers(G),
                                     relevance=relevance, style_mean=styleclip.style_mean_std(G)[0],
                                     style_std=styleclip.style_mean_std(G)[1], channels_done=rows)
    write_published(models / "stylegan_directions" / "styleclip_ffhq", fake)
    prompt = tiny_prompt("pti_styleclip_edit")
    for node in prompt.values():
        if node["class_type"] == "PTI_LoadCLIP":
            node["inputs"]["clip_name"] = "tiny/open_clip_model.safetensors"
        if node["class_type"] == "PTI_StyleCLIPDirection":
            assert node["inputs"]["statistics"] == "styleclip_ffhq/fs3.npy"
            node["inputs"]["beta"] = 0.05
    core = CoreStandIns(inputs, tmp_path / "output")
    outputs = execute(pack, prompt, core)
    direction = outputs["7"][0]
    assert direction.space == "s" and direction.info["alpha_applied"] == 4.0
    edited, reconstruction = outputs["8"][0], outputs["5"][1]
    assert edited.shape == reconstruction.shape == (1, 16, 16, 3)
    assert float((edited - reconstruction).abs().max()) > 1e-3  # the sentence changed the face
    photo, (pasted,) = outputs["1"][0], outputs["9"]
    assert pasted.shape == photo.shape and float((pasted - photo).abs().max()) > 0.05
    (saved,) = core.saved
    assert saved.shape == (1, 1024, 1024, 3)


@pytest.mark.parametrize("case", ["binbytes8", "memo_index", "frame"])
def test_statistics_pickles_and_clip_archives_with_bomb_length_fields_are_refused_unread(tmp_path, case):
    """S_mean_std and a TorchScript data.pkl go through the same pre-scan as model pickles."""
    import psutil

    tib = 1 << 40
    payload = {"binbytes8": b"\x80\x04\x8e" + tib.to_bytes(8, "little") + b"x" * 64 + b".",
               "memo_index": b"\x80\x02N" + b"r\xff\xff\xff\xff" + b".",  # a 2**32-entry memo in the C unpickler
               "frame": b"\x80\x04\x95" + tib.to_bytes(8, "little") + b"N."}[case]
    statistics = tmp_path / "S_mean_std"
    statistics.write_bytes(payload)
    archive = tmp_path / "ViT-B-32.pt"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("ViT-B-32/data.pkl", payload)
        handle.writestr("ViT-B-32/constants.pkl", pickle.dumps(()))
        handle.writestr("ViT-B-32/code/__torch__.py", "")
    before = psutil.Process().memory_info().rss
    with pytest.raises(CheckpointError, match="S_mean_std"):
        styleclip.read_numpy_pickle(statistics)
    with pytest.raises(CheckpointError, match="ViT-B-32"):
        clip_models.read_torchscript_tensors(archive)
    assert psutil.Process().memory_info().rss - before < 256 << 20


def test_compressed_or_missing_torchscript_entries_are_refused(tmp_path):
    """torch.jit.save never compresses; a deflated entry (a zip bomb's tool) or a missing storage is refused."""
    good = pickle.dumps({"w": 1}, protocol=2)
    compressed = tmp_path / "compressed.pt"
    with zipfile.ZipFile(compressed, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("m/data.pkl", good)
        handle.writestr("m/code/__torch__.py", "")
    with pytest.raises(CheckpointError, match="compressed"):
        clip_models.read_torchscript_tensors(compressed)
    model = torch.nn.Linear(2, 2)
    traced = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 2)), str(traced))
    assert set(clip_models.read_torchscript_tensors(traced)) == {"weight", "bias"}
    missing = tmp_path / "missing.pt"
    with zipfile.ZipFile(traced) as src, zipfile.ZipFile(missing, "w") as dst:
        for item in src.infolist():
            if "/data/" not in item.filename:
                dst.writestr(item, src.read(item.filename))
    with pytest.raises(CheckpointError, match="missing"):
        clip_models.read_torchscript_tensors(missing)
