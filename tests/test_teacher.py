"""The DCGAN face teacher rebuilt from gan-face-generate's weights file (no package import)."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
import torch
import torch.nn.functional as F

from pti_core.errors import CheckpointError
from pti_core.teachers import DCGAN_STATE_KEY, DCGANGenerator, dcgan_weights_path, load_dcgan_teacher


@pytest.fixture(scope="module")
def teacher():
    return load_dcgan_teacher()


def _reference_forward(state: dict, z: torch.Tensor) -> torch.Tensor:
    """The DCGAN tutorial generator written out functionally from the raw state dict."""
    x = z[:, :, None, None]
    for conv, bn, stride, padding in ((0, 1, 1, 0), (3, 4, 2, 1), (6, 7, 2, 1), (9, 10, 2, 1)):
        x = F.conv_transpose2d(x, state[f"main.{conv}.weight"], stride=stride, padding=padding)
        x = F.batch_norm(x, state[f"main.{bn}.running_mean"], state[f"main.{bn}.running_var"],
                         state[f"main.{bn}.weight"], state[f"main.{bn}.bias"], training=False, eps=1e-5)
        x = F.relu(x)
    return torch.tanh(F.conv_transpose2d(x, state["main.12.weight"], stride=2, padding=1))


def test_weights_file_is_read_without_importing_the_package(teacher):
    import sys

    assert "gan_face_generate" not in sys.modules  # its __init__ would import torchvision
    assert zipfile.is_zipfile(dcgan_weights_path())
    assert teacher.z_dim == 100 and teacher.img_resolution == 64
    assert teacher.main[0].weight.shape == (100, 512, 4, 4)  # ngf 64 read from the state dict
    assert not any(p.requires_grad for p in teacher.parameters())


def test_matches_functional_reference_and_range(teacher):
    state = torch.load(dcgan_weights_path(), map_location="cpu", weights_only=True)[DCGAN_STATE_KEY]
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = teacher(z)
        ref = _reference_forward(state, z)
    assert out.shape == (4, 3, 64, 64)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert out.min() >= -1 and out.max() <= 1
    # A trained generator: different z give clearly different images, and the images have structure.
    assert (out[0] - out[1]).abs().mean() > 0.05
    assert out.std(dim=(2, 3)).mean() > 0.2


def test_batchnorm_stays_in_inference_mode(teacher):
    z = torch.randn(3, 100, generator=torch.Generator().manual_seed(1))
    teacher.train()
    with torch.no_grad():
        together = teacher(z)
        alone = teacher(z[:1])
    torch.testing.assert_close(together[:1], alone, rtol=0, atol=1e-5)  # batch statistics never used
    assert not teacher.training


def test_tar_wrapped_checkpoint_loads_identically(teacher, tmp_path):
    raw = dcgan_weights_path().read_bytes()
    path = tmp_path / "weights.tar"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("checkpoint.pth")
        info.size = len(raw)
        archive.addfile(info, io.BytesIO(raw))
    other = load_dcgan_teacher(path)
    z = torch.randn(2, 100, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(other(z), teacher(z))


def test_bad_files_raise_checkpoint_error(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="neither"):
        load_dcgan_teacher(junk)
    wrong = tmp_path / "wrong.pth"
    torch.save({"something_else": torch.zeros(1)}, wrong)
    with pytest.raises(CheckpointError, match="netG_state_dict"):
        load_dcgan_teacher(wrong)
    small = tmp_path / "small.pth"
    state = DCGANGenerator(nz=8, ngf=4).state_dict()
    state.pop("main.4.bias")
    torch.save({"netG_state_dict": state}, small)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_dcgan_teacher(small)


def test_rejects_wrong_z_shape(teacher):
    with pytest.raises(ValueError, match="z must be"):
        teacher(torch.zeros(1, 99))
