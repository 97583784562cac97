"""The main job's stages in one place: align -> invert -> tune -> edit, for the CLI, the benches and tests.

Examples:
    >>> from pti_core.defaults import builtin_generator
    >>> from pti_core.presets import builtin_configs
    >>> import dataclasses
    >>> G = builtin_generator()
    >>> inversion, tuning = builtin_configs(perceptual="random-alex", preview_every=0)
    >>> inversion, tuning = dataclasses.replace(inversion, steps=2), dataclasses.replace(tuning, steps=2)
    >>> result = reconstruct(G, torch.zeros(1, 3, 64, 64), inversion=inversion, tuning=tuning)
    >>> result.reconstruction.shape
    torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import time

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .inversion import Inversion, InversionConfig, invert
from .progress import ProgressFn, StopFn
from .tune import TunedGenerator, TuningConfig, pivotal_tune


@dataclass(frozen=True)
class Reconstruction:
    """A photo's pivot, its tuned generator and the images along the way (all ``[1, 3, R, R]`` in [-1, 1])."""

    target: torch.Tensor
    inversion: Inversion
    tuned: TunedGenerator
    reconstruction: torch.Tensor
    aligned: Any = None  # pti_core.align.AlignedFace when the photo was aligned
    seconds: tuple[float, float] = (0.0, 0.0)  # wall time of inversion and of tuning

    @property
    def generator(self) -> nn.Module:
        """Returns the tuned generator."""
        return self.tuned.generator


def align_for(G: nn.Module, photo, *, name: str | None = None, supersample: int | None = None):
    """Returns the :class:`pti_core.align.AlignedFace` of ``photo`` framed as ``G`` was trained (its template)."""
    from .align import align_face, generator_template

    size = int(G.img_resolution)
    return align_face(photo, output_size=size, template=generator_template(G),
                      supersample=supersample if supersample is not None else max(4 * size, 256), name=name)


def reconstruct(G: nn.Module, target: torch.Tensor, *, inversion: InversionConfig, tuning: TuningConfig,
                aligned: Any = None, progress: ProgressFn | None = None,
                should_stop: StopFn | None = None) -> Reconstruction:
    """Returns the pivot of ``target`` ``[1, 3, R, R]`` and the generator tuned on it (PTI's stages 1 and 2)."""
    device = next(G.parameters()).device
    target = target.to(device)
    started = time.perf_counter()
    projection = invert(G, target, config=inversion, progress=progress, should_stop=should_stop)
    inverted = time.perf_counter()
    tuned = pivotal_tune(G, target, projection.ws.to(device), config=tuning, progress=progress,
                         should_stop=should_stop)
    with torch.no_grad():
        image = tuned.generator.synthesis(projection.ws.to(device), noise_mode="const").clamp(-1, 1)
    seconds = (inverted - started, time.perf_counter() - inverted)
    return Reconstruction(target=target, inversion=projection, tuned=tuned, reconstruction=image, aligned=aligned,
                          seconds=seconds)


def render_edits(G: nn.Module, ws: torch.Tensor, edits: Sequence[tuple[Any, float]]) -> torch.Tensor:
    """Returns ``G``'s images ``[len(edits), 3, R, R]`` of ``ws`` edited by each ``(direction, strength)`` alone."""
    from .directions import apply_directions

    device = next(G.parameters()).device
    with torch.no_grad():
        return torch.cat([G.synthesis(apply_directions(ws, [(direction, float(strength))]).to(device),
                                      noise_mode="const").clamp(-1, 1) for direction, strength in edits])


__all__ = ["Reconstruction", "align_for", "reconstruct", "render_edits"]
