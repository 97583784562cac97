"""Progress and cancellation hooks shared by every long-running function.

A host (command line, ComfyUI node, test) passes two optional callables:

* ``progress(step, total, phase, preview)``: called after each step; ``preview`` is a
  ``[1, 3, H, W]`` tensor in [-1, 1] every ``preview_every`` steps and ``None`` otherwise.
* ``should_stop()``: checked every step; returning True raises :class:`pti_core.errors.Cancelled`.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .errors import Cancelled

ProgressFn = Callable[[int, int, str, Optional[torch.Tensor]], None]
StopFn = Callable[[], bool]


def check_stop(should_stop: StopFn | None, *, phase: str, step: int) -> None:
    """Raises :class:`Cancelled` when ``should_stop()`` says so.

    Hosts may also raise their own exception from ``should_stop`` (ComfyUI's
    interrupt does); it propagates unchanged.
    """
    if should_stop is not None and should_stop():
        raise Cancelled(f"{phase} cancelled at step {step}; no result was produced")


def report(progress: ProgressFn | None, step: int, total: int, phase: str,
           preview: torch.Tensor | None = None) -> None:
    """Calls ``progress`` if given."""
    if progress is not None:
        progress(step, total, phase, preview)
