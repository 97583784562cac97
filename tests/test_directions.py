"""pti_core.directions: every file format, discovery (SeFa, GANSpace), directions from examples, applying."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import golden_dir, realworld
from pti_core import directions as D
from pti_core.errors import ConfigError, DirectionError, LatentError, MissingFileError, OutputExistsError, \
    UnsafeCheckpointError
from pti_core.generators.stylegan2 import Generator

REAL = {  # file -> vectors shape once loaded [K, L, w_dim]
    "age.pt": [1, 1, 512],
    "smile.pt": [1, 1, 512],
    "rotation.pt": [1, 1, 512],
    "e4e_pose_18x512.pt": [1, 18, 512],
    "ffhq_pca.pt": [80, 1, 512],
}


@pytest.fixture(scope="module")
def G():
    folder = golden_dir("sg2ada_tiny")
    config = json.loads((folder / "config.json").read_text())
    G = Generator(**config["init_kwargs"]).eval().requires_grad_(False)
    G.load_state_dict(load_file(folder / "weights.safetensors"), strict=True)
    return G


@pytest.fixture(scope="module")
def ws(G):
    with torch.no_grad():
        return G.mapping(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(1)), None)  # [4, 8, 32]


def _mean_image_change(G, ws, vectors, strengths):
    """Mean |G(w + s_i v_i) - G(w)| per direction i (vectors [N, w_dim]), one synthesis call."""
    edited = torch.cat([ws + s * v.to(ws)[None, None] for v, s in zip(vectors, strengths)])
    with torch.no_grad():
        base = G.synthesis(ws, noise_mode="const")
        out = G.synthesis(edited, noise_mode="const").reshape(len(vectors), *base.shape)
    return (out - base[None]).abs().flatten(1).mean(1)  # [N]


def _random_units(n, dim, seed=100):
    v = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return v / v.norm(dim=1, keepdim=True)


# ----------------------------------------------------------------------------- real files + manifest

@pytest.mark.parametrize("name", sorted(REAL))
def test_real_direction_files_load_with_manifest_facts(name):
    path = realworld("pti_directions", name)
    direction = D.load_direction(path)
    assert list(direction.vectors.shape) == REAL[name]
    assert direction.vectors.dtype == torch.float32
    torch.testing.assert_close(direction.vectors.norm(dim=-1), torch.ones(REAL[name][:2]), atol=1e-5, rtol=0)
    entry = D.find_manifest_entry(sha256=D.file_sha256(path))
    assert entry is not None, f"{name} sha256 is not in directions/manifest.json"
    assert direction.info["sha256"] == entry["sha256"]
    assert direction.name == entry["name"] and direction.model == entry["model"]
    assert direction.source == entry["url"]
    raw = torch.load(path, map_location="cpu", weights_only=True)                # the file's own shape
    assert list(entry["shape"]) == list((raw["comp"] if isinstance(raw, dict) else raw).shape)
    direction.check_fits(num_ws=18, w_dim=512)  # fits FFHQ 1024 StyleGAN2
    if name == "ffhq_pca.pt":
        assert direction.is_component_set and direction.std.shape == (80,) and direction.mean.shape == (512,)
        comp = direction.vectors[:, 0]
        torch.testing.assert_close(comp @ comp.T, torch.eye(80), atol=1e-5, rtol=0)   # orthonormal basis
        assert direction.std.argmax() == 0 and direction.std[:10].mean() > 3 * direction.std[-10:].mean()
        single = D.load_direction(path, component=46)
        assert torch.equal(single.vectors[0], direction.vectors[46]) and single.std.item() == direction.std[46].item()
    else:
        assert direction.strength_range == (-3.0, 3.0)


def test_real_pose_rows_equal_rotation():
    pose = D.load_direction(realworld("pti_directions", "e4e_pose_18x512.pt"))
    rotation = D.load_direction(realworld("pti_directions", "rotation.pt"))
    assert torch.allclose(pose.vectors[0], rotation.vectors[0].expand(18, -1), atol=1e-6)


def test_real_file_against_tiny_model_is_a_clear_error(G):
    path = realworld("pti_directions", "age.pt")
    with pytest.raises(DirectionError, match=r"width 512 but the model's w_dim is 32.*FFHQ 1024 StyleGAN2") as info:
        D.load_direction(path, G=G)
    assert "\n" not in str(info.value)
    with pytest.raises(DirectionError, match="18 per-layer rows but the model has num_ws=8"):
        D.load_direction(realworld("pti_directions", "e4e_pose_18x512.pt")).check_fits(num_ws=8, w_dim=512)


def test_manifest_schema():
    entries = D.manifest_entries()
    assert len(entries) >= 5
    files = [e["file"] for e in entries]
    assert len(files) == len(set(files)), "manifest file names must be unique"
    required = {"name", "file", "method", "kind", "space", "model", "w_dim", "num_ws", "shape", "dtype", "url",
                "licence", "sha256", "strength_range", "notes"}
    for entry in entries:
        assert required <= set(entry), entry["file"]
        assert entry["url"].startswith("https://") and entry["licence"]
        assert entry["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
        assert entry["shape"][-1] == entry["w_dim"]
        assert entry["kind"] in D.KINDS and entry["space"] in D.SPACES
        assert any(entry["file"].endswith(ext) for ext in D.EXTENSIONS)
    for name in REAL:  # the real files are all declared, with their sha256
        assert D.find_manifest_entry(sha256=D.file_sha256(realworld("pti_directions", name))) is not None


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(MissingFileError, match=r"danielroich/PTI/main/editings/interfacegan_directions/age\.pt"):
        D.load_direction(tmp_path / "age.pt")
    with pytest.raises(MissingFileError, match="PTI_DiscoverDirections"):
        D.load_direction(tmp_path / "unknown_thing.pt")


# ----------------------------------------------------------------------------- synthetic formats

@pytest.mark.parametrize("shape,expected,kind", [
    ([32], [1, 1, 32], "direction"),
    ([1, 32], [1, 1, 32], "direction"),
    ([8, 32], [1, 8, 32], "direction"),
    ([1, 8, 32], [1, 8, 32], "direction"),
    ([5, 1, 32], [5, 1, 32], "components"),
])
def test_pt_tensor_shapes(tmp_path, shape, expected, kind, G):
    tensor = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    torch.save(tensor, tmp_path / "d.pt")
    direction = D.load_direction(tmp_path / "d.pt", G=G)
    assert list(direction.vectors.shape) == expected and direction.kind == kind
    assert torch.equal(direction.vectors.reshape(-1), tensor.reshape(-1))
    assert direction.name == "d" and repr(direction).startswith("Direction(d: ")


def test_npy_interfacegan_float64(tmp_path, G):
    boundary = np.random.default_rng(0).standard_normal((1, 32))
    boundary /= np.linalg.norm(boundary)
    np.save(tmp_path / "stylegan_x_w_boundary.npy", boundary)  # InterFaceGAN: float64 (1, w_dim)
    direction = D.load_direction(tmp_path / "stylegan_x_w_boundary.npy", G=G)
    assert direction.vectors.dtype == torch.float32 and list(direction.vectors.shape) == [1, 1, 32]
    assert np.allclose(direction.vectors[0, 0].numpy(), boundary[0], atol=1e-7)
    per_layer = np.repeat(boundary, 8, axis=0)                # Puzer-style (num_ws, w_dim) float64
    np.save(tmp_path / "smile.npy", per_layer)
    assert list(D.load_direction(tmp_path / "smile.npy", G=G).vectors.shape) == [1, 8, 32]


def test_npy_object_array_is_refused(tmp_path):
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafeCheckpointError, match="pickled"):
        D.load_direction(tmp_path / "evil.npy")


class _NotATensor:
    pass


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pt_with_objects_is_refused(tmp_path):
    torch.save({"direction": _NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        D.load_direction(tmp_path / "evil.pt")
    (tmp_path / "plain.pkl.pt").write_bytes(pickle.dumps(_NotATensor()))
    with pytest.raises((UnsafeCheckpointError, DirectionError)):
        D.load_direction(tmp_path / "plain.pkl.pt")


def test_ganspace_npz_and_pt_dict(tmp_path, G):
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    comp = q.T[:6, None, :].astype(np.float32)                          # [6, 1, 32]
    mean = rng.standard_normal((1, 32)).astype(np.float32)
    stdev = np.linspace(3, 1, 6).astype(np.float32)
    np.savez_compressed(tmp_path / "gs.npz", act_comp=rng.standard_normal((6, 5)).astype(np.float32),
                        lat_comp=comp, lat_mean=mean, lat_stdev=stdev, var_ratio=np.ones(6, np.float32))
    direction = D.load_direction(tmp_path / "gs.npz", G=G)
    assert direction.kind == "components" and list(direction.vectors.shape) == [6, 1, 32]
    assert np.array_equal(direction.std.numpy(), stdev) and np.array_equal(direction.mean.numpy(), mean[0])
    torch.save({"mean": torch.from_numpy(mean), "comp": torch.from_numpy(comp), "std": torch.from_numpy(stdev)},
               tmp_path / "gs.pt")
    other = D.load_direction(tmp_path / "gs.pt", G=G)
    assert torch.equal(other.vectors, direction.vectors) and torch.equal(other.std, direction.std)


def test_projected_w_npz_points_to_load_latent(tmp_path):
    np.savez(tmp_path / "projected_w.npz", w=np.zeros((1, 8, 32), np.float32))
    with pytest.raises(DirectionError, match="PTI_LoadLatent"):
        D.load_direction(tmp_path / "projected_w.npz")


def test_bad_shapes_and_types(tmp_path):
    torch.save(torch.ones(2, 3, 4, 5), tmp_path / "bad.pt")
    with pytest.raises(DirectionError, match=r"unsupported direction shape \[2, 3, 4, 5\]"):
        D.load_direction(tmp_path / "bad.pt")
    torch.save(torch.zeros(1, 32), tmp_path / "zero.pt")
    with pytest.raises(DirectionError, match="all zeros"):
        D.load_direction(tmp_path / "zero.pt")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(DirectionError, match="unsupported direction file type"):
        D.load_direction(tmp_path / "d.txt")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00garbage")
    with pytest.raises(DirectionError, match="not a readable direction file"):
        D.load_direction(tmp_path / "broken.safetensors")


def test_safetensors_round_trip_is_bit_exact(tmp_path, G):
    found = D.ganspace(G, num_samples=400, num_components=5, seed=3, layers="middle")
    path = D.save_direction(found, tmp_path / "gs.safetensors")
    back = D.load_direction(path, G=G)
    for key in ("vectors", "eigenvalues", "std", "mean"):
        assert torch.equal(getattr(back, key), getattr(found, key)), key
    for key in ("name", "source", "kind", "space", "model_hash", "layers", "strength_range"):
        assert getattr(back, key) == getattr(found, key), key
    assert back.info["num_samples"] == 400 and back.info["sha256"] == D.file_sha256(path)
    with pytest.raises(OutputExistsError):
        D.save_direction(found, path)
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"
    save_file({"boundary": torch.ones(1, 32)}, str(tmp_path / "foreign.safetensors"))
    assert list(D.load_direction(tmp_path / "foreign.safetensors").vectors.shape) == [1, 1, 32]


def test_stylespace_payload_round_trip(tmp_path):
    styles = {"b4.conv1": torch.randn(2, 16), "b8.conv0": torch.randn(2, 8)}
    direction = D.Direction(None, space="s", name="s_dir", styles=styles)
    assert direction.num_components == 2
    back = D.load_direction(D.save_direction(direction, tmp_path / "s.safetensors"))
    assert back.space == "s" and back.vectors is None
    assert all(torch.equal(back.styles[k], styles[k]) for k in styles)
    with pytest.raises(DirectionError, match="StyleSpace"):
        D.apply_directions(torch.zeros(1, 8, 32), [(back.component(0), 1.0)])


# ----------------------------------------------------------------------------- discovery

def test_sefa_orthonormal_sorted_and_matches_definition(G):
    found = D.sefa(G)
    vectors = found.vectors[:, 0].double()                                  # [32, 32]
    assert found.kind == "components" and vectors.shape == (32, 32)
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(32, dtype=torch.float64), atol=1e-5, rtol=0)
    assert bool((found.eigenvalues[:-1] >= found.eigenvalues[1:]).all())
    # definition: A (row-normalised affine weights, one per ws row) satisfies A^T A v = lambda v
    chosen = D.sefa_layers(G)
    assert [idx for _, idx, _ in chosen] == list(range(G.num_ws))
    assert [name for name, _, _ in chosen][-1] == "b32.torgb"
    A = torch.cat([affine.weight.double() for _, _, affine in chosen])
    A = A / A.norm(dim=1, keepdim=True)
    for k in (0, 1, 31):
        torch.testing.assert_close(A.T @ A @ vectors[k], found.eigenvalues[k].double() * vectors[k],
                                   atol=1e-3, rtol=1e-4)
    # numpy reference for the spectrum
    reference = np.sort(np.linalg.eigvalsh((A.T @ A).numpy()))[::-1]
    assert np.allclose(found.eigenvalues.numpy(), reference, rtol=1e-5)
    coarse = D.sefa(G, layers="coarse", num_components=4)
    assert coarse.vectors.shape == (4, 1, 32) and coarse.layers == (0, 2)
    assert not torch.allclose(coarse.vectors[0].abs(), found.vectors[0].abs(), atol=1e-3)


def test_sefa_and_ganspace_on_stylegan3():
    from pti_core.generators.stylegan3 import Generator as Generator3

    folder = golden_dir("sg3t_tiny")
    G3 = Generator3(**json.loads((folder / "config.json").read_text())["init_kwargs"]).eval()
    G3.load_state_dict(load_file(folder / "weights.safetensors"), strict=True)
    found = D.sefa(G3, layers="fine")
    rows = [idx for _, idx, _ in D.sefa_layers(G3)]
    assert rows == list(range(1, G3.num_ws)), "row 0 drives the input transform, not a style"
    assert found.layers == D.layer_presets(G3.num_ws)["fine"]
    vectors = found.vectors[:, 0].double()
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(G3.w_dim, dtype=torch.float64), atol=1e-5, rtol=0)
    components = D.ganspace(G3, num_samples=300, num_components=4)
    with torch.no_grad():
        ws3 = G3.mapping(torch.randn(2, G3.z_dim, generator=torch.Generator().manual_seed(0)), None)
    out = D.apply_directions(ws3, D.Edit(components, 1.0, "coarse", component=0, mode="set"))
    start, end = D.layer_presets(G3.num_ws)["coarse"]
    assert torch.equal(out[:, end:], ws3[:, end:]) and not torch.equal(out[:, :end], ws3[:, :end])


def test_sefa_first_direction_moves_the_image_more_than_random(G, ws):
    first = D.sefa(G).vectors[0, 0]
    randoms = _random_units(8, G.w_dim)
    change = _mean_image_change(G, ws, torch.cat([first[None], randoms]), [3.0] * 9)
    assert change[0] > 1.1 * change[1:].mean(), (change[0].item(), change[1:].tolist())


def test_ganspace_components_and_first_component_moves_more(G, ws):
    found = D.ganspace(G, num_samples=2000, seed=0)
    again = D.ganspace(G, num_samples=2000, seed=0)
    assert torch.equal(found.vectors, again.vectors) and torch.equal(found.std, again.std)
    assert not torch.equal(D.ganspace(G, num_samples=2000, seed=1).mean, found.mean)
    vectors = found.vectors[:, 0].double()
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(32, dtype=torch.float64), atol=1e-5, rtol=0)
    assert bool((found.std[:-1] >= found.std[1:]).all())
    samples = D.sample_ws(G, num_samples=2000, seed=0)
    torch.testing.assert_close((samples - found.mean) @ found.vectors[0, 0], (samples @ found.vectors[0, 0])
                               - found.mean @ found.vectors[0, 0])
    torch.testing.assert_close(((samples - found.mean) @ found.vectors[:, 0].T).std(0), found.std,
                               atol=1e-4, rtol=1e-4)
    # GANSpace strengths are in standard deviations of w along the direction (sigma): at the same
    # sigma the first component changes the image more than random directions do.
    randoms = _random_units(8, G.w_dim)
    random_std = (samples @ randoms.T).std(0)                                  # [8]
    sigma = 2.0
    change = _mean_image_change(G, ws, torch.cat([found.vectors[0], randoms]),
                                [sigma * found.std[0].item()] + (sigma * random_std).tolist())
    assert change[0] > 1.3 * change[1:].mean(), (change[0].item(), change[1:].tolist())
    assert found.std[0] > random_std.max()


# ----------------------------------------------------------------------------- applying

def test_layer_presets():
    assert D.layer_presets(18) == {"all": (0, 18), "coarse": (0, 4), "middle": (4, 8), "fine": (8, 18)}
    for num_ws in range(3, 40):
        presets = D.layer_presets(num_ws)
        assert presets["coarse"][0] == 0 and presets["fine"][1] == num_ws
        assert presets["coarse"][1] == presets["middle"][0] and presets["middle"][1] == presets["fine"][0]
        assert all(end > start for start, end in presets.values())
    assert D.resolve_layers((2, -1), 8) == (2, 8) and D.resolve_layers(None, 8) == (0, 8)
    with pytest.raises(ConfigError, match="empty or outside"):
        D.resolve_layers((5, 3), 8)
    with pytest.raises(ConfigError, match="preset"):
        D.resolve_layers("medium", 8)


def test_apply_on_a_layer_range_leaves_other_rows_bit_identical(ws):
    d = _random_units(1, 32)[0]
    original = ws.clone()
    out = D.apply_directions(ws, [(d, 2.5)], layers=(2, 5))
    assert torch.equal(ws, original), "input modified"
    assert torch.equal(out[:, :2], ws[:, :2]) and torch.equal(out[:, 5:], ws[:, 5:])
    torch.testing.assert_close(out[:, 2:5], ws[:, 2:5] + 2.5 * d, atol=0, rtol=0)
    fine = D.apply_directions(ws, D.Edit(d, -1.0, "fine"))
    start, end = D.layer_presets(8)["fine"]
    assert torch.equal(fine[:, :start], ws[:, :start]) and not torch.equal(fine[:, start:], ws[:, start:])
    per_layer = torch.randn(8, 32)
    out = D.apply_directions(ws, [(per_layer, 1.0, (3, 6))])
    torch.testing.assert_close(out[:, 3:6], ws[:, 3:6] + per_layer[3:6], atol=0, rtol=0)
    assert torch.equal(out[:, :3], ws[:, :3]) and torch.equal(out[:, 6:], ws[:, 6:])


def test_edits_sum_and_default_layers(ws):
    a, b = _random_units(2, 32)
    da = D.Direction(a[None, None], name="a", layers=(0, 2))
    out = D.apply_directions(ws, [(da, 1.0), D.Edit(b, 2.0, (1, 3))])
    expected = ws.clone()
    expected[:, 0:2] += a
    expected[:, 1:3] += 2.0 * b
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert torch.equal(out[:, 3:], ws[:, 3:])
    everything = D.apply_directions(ws, [(da, 1.0)], layers="all")            # explicit layers win
    torch.testing.assert_close(everything, ws + a, atol=1e-6, rtol=0)


def test_apply_errors(ws):
    with pytest.raises(DirectionError, match="width 512 but the model's w_dim is 32"):
        D.apply_directions(ws, [(torch.ones(1, 512), 1.0)])
    with pytest.raises(DirectionError, match="pick one"):
        D.apply_directions(ws, [(torch.randn(3, 1, 32), 1.0)])
    with pytest.raises(DirectionError, match="5 per-layer rows"):
        D.apply_directions(ws, [(torch.randn(5, 32), 1.0)])
    with pytest.raises(DirectionError, match="mode 'set' needs a GANSpace component"):
        D.apply_directions(ws, D.Edit(torch.ones(32), 1.0, mode="set"))
    with pytest.raises(LatentError):
        D.apply_directions(ws[0], [(torch.ones(32), 1.0)])
    with pytest.raises(ConfigError, match="mode"):
        D.Edit(torch.ones(32), 1.0, mode="multiply")


def test_ganspace_set_mode_sets_the_coordinate(G, ws):
    found = D.ganspace(G, num_samples=1000, seed=0)
    k, start, end, sigma = 2, 1, 4, -1.5
    out = D.apply_directions(ws, D.Edit(found, sigma, (start, end), component=k, mode="set"))
    v, std, mean = found.vectors[k, 0], found.std[k], found.mean
    coordinate = (out[:, start:end] - mean) @ v / std                            # [B, rows]
    torch.testing.assert_close(coordinate, torch.full_like(coordinate, sigma), atol=1e-4, rtol=0)
    assert torch.equal(out[:, :start], ws[:, :start]) and torch.equal(out[:, end:], ws[:, end:])
    # only the coordinate along v changed
    residual = (out - ws)[:, start:end]
    torch.testing.assert_close(residual - (residual @ v)[..., None] * v, torch.zeros_like(residual), atol=1e-5, rtol=0)
    # the reference formula (PTI/e4e get_delta, W latents): delta = (sigma - coord) * comp * std
    w0 = ws[0, 0]
    reference = (sigma - ((w0 - mean) @ v) / std) * v * std
    torch.testing.assert_close(out[0, start] - ws[0, start], reference, atol=1e-5, rtol=0)
    add = D.apply_directions(ws, D.Edit(found, 2.0, None, component=k))
    torch.testing.assert_close(add - ws, (2.0 * v).expand_as(ws), atol=1e-6, rtol=0)


def test_conditional_manipulation_projects_out(ws):
    primary, cond = _random_units(2, 32, seed=7)
    out = D.apply_directions(ws, D.Edit(primary, 3.0, condition=(cond,)))
    delta = (out - ws)[:, 0]
    torch.testing.assert_close(delta @ cond, torch.zeros(ws.shape[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(delta.norm(dim=-1), torch.full((ws.shape[0],), 3.0), atol=1e-5, rtol=0)
    assert float(delta[0] @ primary) > 0
    same = D.apply_directions(ws, [(primary, 3.0)], condition=[cond])
    torch.testing.assert_close(same, out, atol=0, rtol=0)
    with pytest.raises(DirectionError, match="inside the conditioning"):
        D.apply_directions(ws, D.Edit(primary, 1.0, condition=(primary * 2,)))


def test_sweep_frames(ws):
    d = _random_units(1, 32)[0]
    strengths = D.sweep_strengths(-3, 3, 8)
    assert len(strengths) == 8 and strengths[0] == -3 and strengths[-1] == 3
    frames = D.sweep(ws[:2], d, strengths, layers=(0, 4), extra_edits=[(d * 0 + _random_units(1, 32, 9)[0], 1.0)])
    assert frames.shape == (16, 8, 32)
    for i, s in enumerate(strengths):
        expected = D.apply_directions(ws[:2], [(d, s), (_random_units(1, 32, 9)[0], 1.0)], layers=(0, 4))
        assert torch.equal(frames[2 * i:2 * i + 2], expected)
    assert torch.equal(frames[:, 4:], ws[:2, 4:].repeat(8, 1, 1))


# ----------------------------------------------------------------------------- from examples

def test_direction_from_latents_recovers_the_offset():
    generator = torch.Generator().manual_seed(0)
    truth = _random_units(1, 32, seed=3)[0]
    ws_from = torch.randn(64, 8, 32, generator=generator)
    ws_to = torch.randn(64, 8, 32, generator=generator) + 2.0 * truth
    found = D.direction_from_latents(ws_from, ws_to)
    assert found.vectors.shape == (1, 1, 32)
    assert abs(float(found.vectors.norm()) - 1) < 1e-6
    assert float(found.vectors[0, 0] @ truth) > 0.97
    flipped = D.direction_from_latents(ws_to, ws_from)
    torch.testing.assert_close(flipped.vectors, -found.vectors, atol=1e-6, rtol=0)
    per_layer = D.direction_from_latents({"ws": ws_from}, {"ws": ws_to}, per_layer=True)
    assert per_layer.vectors.shape == (1, 8, 32)
    assert abs(float(per_layer.vectors[0].norm(dim=-1).pow(2).mean().sqrt()) - 1) < 1e-6
    with pytest.raises(DirectionError, match="same mean"):
        D.direction_from_latents(ws_from, ws_from)
    with pytest.raises(LatentError, match="different widths"):
        D.direction_from_latents(ws_from, torch.zeros(3, 8, 16))


def test_direction_from_labels_finds_the_boundary():
    generator = torch.Generator().manual_seed(0)
    truth = _random_units(1, 32, seed=11)[0]
    w = torch.randn(600, 32, generator=generator) * torch.linspace(0.5, 2.0, 32) + 0.3
    labels = ((w - 0.3) @ truth > 0).long()
    found = D.direction_from_labels(w, labels, unit="unit")
    assert abs(float(found.vectors.norm()) - 1) < 1e-6
    assert float(found.vectors[0, 0] @ truth) > 0.9, float(found.vectors[0, 0] @ truth)
    assert found.info["accuracy"] > 0.95
    flipped = D.direction_from_labels(w, 1 - labels, unit="unit")
    assert float(flipped.vectors[0, 0] @ truth) < -0.9
    scores = (w - 0.3) @ truth + 0.1 * torch.randn(600, generator=generator)   # continuous scores
    scored = D.direction_from_labels(w[:, None].expand(-1, 8, -1), scores, score_fraction=0.25, unit="unit")
    assert float(scored.vectors[0, 0] @ truth) > 0.9
    assert scored.info["num_positive"] == scored.info["num_negative"] == 150
    with torch.inference_mode():                                                # as inside ComfyUI
        inside = D.direction_from_labels(w.clone(), labels.clone(), unit="unit")
        inside_ridge = D.direction_from_labels(w.clone(), scores.clone(), method="ridge")
    torch.testing.assert_close(inside.vectors, found.vectors, atol=1e-6, rtol=0)
    assert float(inside_ridge.vectors[0, 0] @ truth) > 0
    with pytest.raises(ConfigError, match="labels"):
        D.direction_from_labels(w, labels[:10])
    with pytest.raises(ConfigError, match="at least 2 positive"):
        D.direction_from_labels(w, torch.zeros(600))
    with pytest.raises(ConfigError, match="different labels"):
        D.direction_from_labels(w, torch.zeros(600), method="ridge")
    with pytest.raises(ConfigError, match="unknown method"):
        D.direction_from_labels(w, labels, method="svm")


def test_learned_direction_strength_is_one_std_of_the_samples():
    """unit="std" (the default): the vector is the unit normal times the std of the samples along it,
    so strength 1 moves a sample by one standard deviation of the data, whatever W's scale."""
    generator = torch.Generator().manual_seed(1)
    truth = _random_units(1, 32, seed=12)[0]
    w = torch.randn(800, 32, generator=generator) * torch.linspace(0.5, 2.0, 32) + 0.3
    scores = (w - 0.3) @ truth + 0.2 * torch.randn(800, generator=generator)
    for method in ("ridge", "logistic"):
        small = D.direction_from_labels(w, scores, method=method)
        big = D.direction_from_labels(w * 10, scores, method=method)       # the same data, W scaled by 10
        unit = small.vectors[0, 0] / small.vectors.norm()
        spread = float(((w - w.mean(0)) @ unit).std())
        assert small.info["unit"] == "std" and abs(float(small.vectors.norm()) - spread) < 1e-4 * spread
        assert abs(small.info["projection_std"] - spread) < 1e-4 * spread
        torch.testing.assert_close(big.vectors, 10 * small.vectors, rtol=1e-3, atol=1e-5)
        assert float(unit @ truth) > 0.9, (method, float(unit @ truth))
        assert abs(small.info["label_std"] - float(scores.double().std())) < 1e-6


def test_learned_direction_conditioned_on_another_is_orthogonal_to_it():
    """condition=[d]: the fitted normal loses its component along d (InterFaceGAN conditional
    manipulation) and keeps the rest; strength 1 is then one std along the new normal."""
    generator = torch.Generator().manual_seed(3)
    a, b = _random_units(2, 32, seed=14)
    b = b - (b @ a) * a
    b = b / b.norm()
    truth = (a + b) / 2 ** 0.5                                                  # the label mixes a and b
    w = torch.randn(800, 32, generator=generator)
    scores = w @ truth + 0.1 * torch.randn(800, generator=generator)
    other = D.Direction(a[None, None] * 3.0, name="yaw")                        # any norm
    found = D.direction_from_labels(w, scores, method="ridge", condition=[other])
    unit = found.vectors[0, 0] / found.vectors.norm()
    assert abs(float(unit @ a)) < 1e-5 and float(unit @ b) > 0.95, (float(unit @ a), float(unit @ b))
    assert found.info["condition"] == ["yaw"] and 0.6 < found.info["label_correlation"] < 0.8
    assert abs(float(found.vectors.norm()) - float(((w - w.mean(0)) @ unit).std())) < 1e-4
    with pytest.raises(DirectionError, match="single W direction"):
        D.direction_from_labels(w, scores, method="ridge",
                                condition=[D.Direction(torch.eye(32)[:3, None], kind="components")])


def test_ridge_beats_extremes_when_labels_are_noisy():
    """With noisy scores in many dimensions, regressing on all samples recovers the normal better
    than a logistic boundary between the extremes (why `directions learn` defaults to ridge)."""
    generator = torch.Generator().manual_seed(2)
    truth = _random_units(1, 64, seed=13)[0]
    w = torch.randn(400, 64, generator=generator)
    scores = w @ truth + 1.0 * torch.randn(400, generator=generator)           # correlation ~0.7
    ridge = D.direction_from_labels(w, scores, method="ridge", unit="unit")
    logistic = D.direction_from_labels(w, scores, method="logistic", unit="unit")
    cos_ridge, cos_logistic = float(ridge.vectors[0, 0] @ truth), float(logistic.vectors[0, 0] @ truth)
    assert cos_ridge > 0.8 and cos_ridge > cos_logistic + 0.05, (cos_ridge, cos_logistic)
    assert 0.5 < ridge.info["correlation"] < 0.95


# ----------------------------------------------------------------------------- command line

def test_cli_discover_and_show(tmp_path, capsys):
    from pti_core.__main__ import main

    folder = golden_dir("sg2ada_tiny")
    out = tmp_path / "sefa.safetensors"
    args = ["directions", "discover", "--model", str(folder / "weights.safetensors"),
            "--config", str(folder / "config.json"), "--method", "sefa", "--layers", "2:6",
            "--num-components", "5", "--out", str(out)]
    assert main(args) == 0
    direction = D.load_direction(out)
    assert direction.vectors.shape == (5, 1, 32) and direction.layers == (2, 6)
    assert main(args) == 2 and "exists" in capsys.readouterr().err                 # never overwrites
    assert main(args + ["--force", "--method", "ganspace", "--num-samples", "300"]) == 0
    assert D.load_direction(out).std is not None
    assert main(["directions", "show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["shape"] == [5, 1, 32] and shown["layers"] == [2, 6]
    assert main(["directions", "show", str(tmp_path / "age.pt")]) == 2
    assert "interfacegan_directions/age.pt" in capsys.readouterr().err


def test_cli_learn_fits_labelled_samples(tmp_path, monkeypatch, capsys):
    """The learn action wires labels.label_samples into direction_from_labels (labeller replaced here:
    dlib finds no faces in a random tiny generator)."""
    from pti_core import labels
    from pti_core.__main__ import main

    truth = _random_units(1, 32, seed=4)[0]
    calls = {}

    def fake_label_samples(G, n, *, labeller, seed, truncation_psi, mirror, jitter):
        calls.update(n=n, labeller=labeller, seed=seed, w_dim=G.w_dim, mirror=mirror, jitter=jitter)
        w = D.sample_ws(G, num_samples=n, seed=seed)
        return labels.LabelledSamples(ws=w, labels=(w - w.mean(0)) @ truth)

    monkeypatch.setattr(labels, "label_samples", fake_label_samples)
    folder = golden_dir("sg2ada_tiny")
    out = tmp_path / "yaw.safetensors"
    assert main(["directions", "learn", "--model", str(folder / "weights.safetensors"), "--config",
                 str(folder / "config.json"), "--labeller", "yaw", "--num-samples", "400", "--seed", "2",
                 "--ridge-alpha", "0.01", "--out", str(out)]) == 0
    assert calls == {"n": 400, "labeller": "yaw", "seed": 2, "w_dim": 32, "mirror": True, "jitter": 0}
    assert "correlation of the fit" in capsys.readouterr().out
    learned = D.load_direction(out)
    assert learned.name == "yaw" and learned.model_hash.startswith("mapping:")
    assert learned.info["method"] == "interfacegan_ridge" and learned.info["unit"] == "std"
    assert learned.info["ridge_alpha"] == 0.01
    assert float(learned.vectors[0, 0] @ truth) / float(learned.vectors.norm()) > 0.9
    assert main(["directions", "learn", "--model", str(folder / "weights.safetensors"), "--config",
                 str(folder / "config.json"), "--labeller", "yaw", "--num-samples", "400", "--method", "logistic",
                 "--unit", "unit", "--jitter", "2", "--no-mirror", "--out", str(out), "--force"]) == 0
    assert calls["mirror"] is False and calls["jitter"] == 2
    assert "training accuracy" in capsys.readouterr().out
    learned = D.load_direction(out)
    assert learned.info["method"] == "interfacegan_logistic" and abs(float(learned.vectors.norm()) - 1) < 1e-6


def test_named_ganspace_edit_on_the_real_ffhq_pca():
    pca = D.load_direction(realworld("pti_directions", "ffhq_pca.pt"))
    generator = torch.Generator().manual_seed(0)
    w = pca.mean + (torch.randn(3, 512, generator=generator) * 0.5)                 # W latents near the data
    ws = w[:, None].expand(-1, 18, -1).clone()                                       # [3, 18, 512]
    edit = D.named_edit(pca, "smile")
    out = D.apply_directions(ws, edit)
    k, start, end, sigma = D.GANSPACE_FFHQ_EDITS["smile"]
    comp, std = pca.vectors[k, 0], pca.std[k]
    assert torch.equal(out[:, :start], ws[:, :start]) and torch.equal(out[:, end:], ws[:, end:])
    coordinate = ((out[:, start:end] - pca.mean) @ comp) / std
    torch.testing.assert_close(coordinate, torch.full_like(coordinate, sigma), atol=1e-4, rtol=0)
    # reference formula (PTI/e4e editings/ganspace.py): delta = (sigma - coord/std) * comp * std
    reference = (sigma - ((w - pca.mean) @ comp)[:, None] / std) * comp * std        # [3, 512]
    torch.testing.assert_close(out[:, start] - ws[:, start], reference, atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="unknown named edit"):
        D.named_edit(pca, "frown")
