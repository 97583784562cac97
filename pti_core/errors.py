"""Exception types of the library.

Every exception carries a one-line message that says what was wrong and what to do.
The command line turns a :class:`PTIError` into one line on stderr and a non-zero exit;
a ComfyUI node lets it reach ComfyUI's error panel as a plain message.
"""

from __future__ import annotations


class PTIError(Exception):
    """Base class: a problem the user can fix; ``str(error)`` is one line."""


class CheckpointError(PTIError):
    """A model file is malformed, truncated, of an unknown format or an unsupported architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A model file asks to run or import something outside the allow-list; it was refused unread."""


class MissingFileError(PTIError):
    """A file the pack needs (weights, model, direction) is not where it should be."""


class DependencyError(PTIError):
    """An optional extra is not installed (e.g. ``pip install .[align]``)."""


class ImageError(PTIError):
    """An image has the wrong shape, range, type or is empty."""


class LatentError(PTIError):
    """A latent does not fit the generator (num_ws / w_dim mismatch) or has a bad shape."""


class DirectionError(PTIError):
    """A direction file cannot be read or does not fit the generator."""


class AlignmentError(PTIError):
    """No usable face was found, or the alignment transform cannot be applied."""


class ConfigError(PTIError):
    """A configuration value is out of range or inconsistent."""


class OutputExistsError(PTIError):
    """Refusing to overwrite an existing output file (pass force / --force)."""


class Cancelled(PTIError):
    """The host asked to stop (``should_stop()`` returned True); no partial result is returned."""
