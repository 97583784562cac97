"""StyleCLIP global directions: text -> StyleSpace edit (Patashnik et al., ICCV 2021, section 6).

StyleSpace S holds the per-layer style vectors ``s = affine(w)`` that modulate every convolution
(``G.synthesis.compute_styles(ws)``). A global direction changes a few style channels by amounts
that move CLIP's image embedding along the direction between two prompts:

1. **Relevance statistics** (once per generator + CLIP model, :func:`compute_relevance`): for N
   seeded samples, each style channel c is set to ``mean_c -/+ delta * std_c`` and both images are
   embedded with CLIP; the normalised embedding differences, averaged over the samples and
   normalised again, form row c of the relevance matrix ``R`` ``[channels, D]``.
2. **Text direction** (:func:`text_direction`): ``delta_t = normalise(E(target) - E(neutral))``,
   each prompt embedded with a set of templates ("a photo of a {}.", ...) and averaged.
3. **Global direction** (:func:`global_direction`): relevance ``r = R @ delta_t``; channels with
   ``|r| < beta`` are zeroed (disentanglement threshold), ``r`` is divided by ``max |r|`` and each
   channel's step is ``r_c * std_c``; an edit adds ``alpha * step`` to the styles
   (:func:`apply_style_direction`).

ToRGB styles are never perturbed or edited (as in the paper). StyleCLIP's published FFHQ
``fs3.npy`` (+ its locally made ``S_mean_std``, optional) loads with
:func:`load_published_statistics`; the pack's own format is one safetensors file
(:func:`save_statistics` / :func:`load_statistics`) that also serves as the resumable cache of
``python -m pti_core styleclip-stats``. Edits are :class:`pti_core.directions.Direction` objects
with ``space == "s"`` (``styles = {layer: [1, C]}``), rendered by :func:`apply_style_edits`.

Differences from the reference code: CLIP sees the float image resized with antialiased bicubic
(the reference quantises to uint8 and uses PIL); the style mean / std come from
``std_samples`` torch-seeded samples (the reference: 100k NumPy-seeded).
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .fileio import atomic_write
from .errors import Cancelled, CheckpointError, ConfigError, DirectionError, MissingFileError, UnsafeCheckpointError

FORMAT = "pti-styleclip-stats"
FORMAT_VERSION = 1

# Prompt templates: open_clip's copy of OpenAI's ImageNet templates ("imagenet"), or the raw text.
TEMPLATE_SETS = ("imagenet", "photo", "none")


@dataclass(frozen=True)
class RelevanceConfig:
    """How relevance statistics are computed (written into the statistics file).

    Attributes:
        samples: number of seeded samples whose images are perturbed (the paper uses 100).
        seed: seed of the z samples (``torch.Generator().manual_seed(seed)``).
        delta: perturbation in units of each channel's standard deviation (reference: 5).
        std_samples: samples used for the per-channel style mean / std (>= samples).
        truncation_psi: truncation of the sampled latents (reference: 0.7).
        truncation_cutoff: number of ws truncated (None: all, as the reference effectively does: it
            truncates w before broadcasting it to every layer).
        center_channel: set the channel to its mean before perturbing (as the reference code does);
            False perturbs around each sample's own value.
        batch_size: images per synthesis / CLIP call (several channels share a call when
            ``2 * samples <= batch_size``).
        noise_mode: synthesis noise ('const' is deterministic).
    """

    samples: int = 100
    seed: int = 0
    delta: float = 5.0
    std_samples: int = 10_000
    truncation_psi: float = 0.7
    truncation_cutoff: int | None = None
    center_channel: bool = True
    batch_size: int = 16
    noise_mode: str = "const"

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"samples must be >= 1, got {self.samples}")
        if self.std_samples < max(2, self.samples):
            raise ConfigError(f"std_samples must be >= max(2, samples), got {self.std_samples}")
        if not self.delta > 0:
            raise ConfigError(f"delta must be > 0, got {self.delta}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.noise_mode not in ("const", "none"):
            raise ConfigError(f"noise_mode must be 'const' or 'none' (deterministic), got {self.noise_mode!r}")


@dataclass(frozen=True)
class StyleStatistics:
    """Relevance statistics of one generator layout and one CLIP model.

    Attributes:
        layers: ``((name, channels), ...)`` of every style layer, in synthesis order.
        perturbed: names of the layers that have relevance rows (every non-ToRGB layer).
        relevance: ``[sum of perturbed channels, D]``; row order follows ``perturbed``.
        style_mean, style_std: ``{layer: [C]}`` for every layer in ``layers``.
        channels_done: rows computed so far (== rows when complete).
        meta: provenance (generator / CLIP fingerprints, config, source).
    """

    layers: tuple[tuple[str, int], ...]
    perturbed: tuple[str, ...]
    relevance: torch.Tensor
    style_mean: dict[str, torch.Tensor]
    style_std: dict[str, torch.Tensor]
    channels_done: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Returns the number of relevance rows (perturbed channels)."""
        return int(self.relevance.shape[0])

    @property
    def complete(self) -> bool:
        """Returns True when every row has been computed."""
        return self.channels_done >= self.rows


# --------------------------------------------------------------------------------------------
# generator helpers


def is_torgb(G: torch.nn.Module, layer_name: str) -> bool:
    """Returns True for a ToRGB style layer (never perturbed or edited by global directions).

    StyleGAN2 names them ``b{R}.torgb``; StyleGAN3's last layer (``L14_1024_3``) has ``is_torgb``.
    """
    layer = getattr(G.synthesis, layer_name, None)
    return "torgb" in layer_name.lower() or bool(getattr(layer, "is_torgb", False))


def perturbed_layers(G: torch.nn.Module) -> tuple[str, ...]:
    """Returns the style layers global directions use: every one except ToRGB, in synthesis order."""
    return tuple(name for name, _ in style_layout(G) if not is_torgb(G, name))


def style_layout(G: torch.nn.Module) -> tuple[tuple[str, int], ...]:
    """Returns ``((layer name, channels), ...)`` of the generator's StyleSpace, in synthesis order."""
    ws = G.mapping.w_avg.detach().reshape(1, 1, -1).repeat(1, G.num_ws, 1)
    with torch.no_grad():
        styles = G.synthesis.compute_styles(ws.to(next(G.parameters()).device))
    return tuple((name, int(value.shape[1])) for name, value in styles.items())


def generator_fingerprint(G: torch.nn.Module) -> str:
    """Returns the sha256 of a generator's weights (names the statistics cache)."""
    from .clip_models import state_fingerprint  # noqa: PLC0415
    return state_fingerprint(G)


def _sample_ws(G: torch.nn.Module, config: RelevanceConfig, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(config.seed)
    z = torch.randn([config.std_samples, G.z_dim], generator=generator)  # [M, z_dim]
    ws = []
    with torch.no_grad():
        for chunk in z.split(1024):
            ws.append(G.mapping(chunk.to(device), None, truncation_psi=config.truncation_psi,
                                truncation_cutoff=config.truncation_cutoff))
    return torch.cat(ws)  # [M, num_ws, w_dim]


def style_mean_std(G: torch.nn.Module, *, config: RelevanceConfig | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Returns per-channel ``(mean, std)`` of every style layer over ``config.std_samples`` seeded samples."""
    config = config or RelevanceConfig()
    device = next(G.parameters()).device
    ws = _sample_ws(G, config, device)
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for chunk in ws.split(1024):
            for name, value in G.synthesis.compute_styles(chunk).items():
                value = value.to(torch.float64)
                sums[name] = sums.get(name, 0) + value.sum(0)
                squares[name] = squares.get(name, 0) + (value * value).sum(0)
    count = ws.shape[0]
    mean = {k: (v / count) for k, v in sums.items()}
    std = {k: ((squares[k] / count - mean[k] ** 2).clamp_min(0) * count / (count - 1)).sqrt() for k in sums}
    return ({k: v.to(torch.float32).cpu() for k, v in mean.items()},
            {k: v.to(torch.float32).cpu() for k, v in std.items()})


# --------------------------------------------------------------------------------------------
# relevance statistics


def empty_statistics(G: torch.nn.Module, clip, *, config: RelevanceConfig | None = None) -> StyleStatistics:
    """Returns statistics with style mean / std filled in and no relevance rows computed yet."""
    config = config or RelevanceConfig()
    layers = style_layout(G)
    perturbed = perturbed_layers(G)
    rows = sum(c for name, c in layers if name in perturbed)
    mean, std = style_mean_std(G, config=config)
    meta = {"generator_fingerprint": generator_fingerprint(G),
            "generator_architecture": getattr(G, "architecture_name", type(G).__name__),
            "clip_name": clip.name, "clip_fingerprint": clip.fingerprint,
            "config": asdict(config), "source": "pti_core.styleclip.compute_relevance"}
    return StyleStatistics(layers=layers, perturbed=perturbed,
                           relevance=torch.zeros([rows, clip.embed_dim], dtype=torch.float32),
                           style_mean=mean, style_std=std, channels_done=0, meta=meta)


def _channel_index(stats: StyleStatistics) -> list[tuple[str, int]]:
    """Returns ``[(layer, channel)]`` for every relevance row, in row order."""
    sizes = dict(stats.layers)
    return [(name, c) for name in stats.perturbed for c in range(sizes[name])]


def compute_relevance(G: torch.nn.Module, clip, *, config: RelevanceConfig | None = None,
                      resume: StyleStatistics | None = None, max_channels: int | None = None,
                      checkpoint: Callable[[StyleStatistics], None] | None = None, checkpoint_every: int = 64,
                      progress: Callable[..., None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> StyleStatistics:
    """Returns StyleCLIP relevance statistics of ``G`` measured with ``clip`` (resumable).

    Args:
        G: generator with StyleSpace (``synthesis.compute_styles`` / ``synthesis(ws, styles=...)``).
        clip: a :class:`pti_core.clip_models.ClipModel` (``encode_image`` of [-1, 1] images).
        config: sampling / perturbation settings (ignored when resuming: the file's config is used).
        resume: partial statistics to continue (must match ``G``'s layout and ``clip``).
        max_channels: stop after this many new rows (the result is then incomplete).
        checkpoint: called with the partial statistics every ``checkpoint_every`` rows (save it).
        progress: ``progress(step, total, phase, preview)``; should_stop: True cancels (raises Cancelled
            after the last checkpoint).
    """
    if resume is not None:
        check_layout(resume, G)
        if resume.meta.get("clip_fingerprint") not in (None, clip.fingerprint):
            raise ConfigError("the statistics being resumed were computed with another CLIP model; "
                              "use the same CLIP weights or start a new file")
        config = RelevanceConfig(**resume.meta["config"])
        stats = resume
    else:
        config = config or RelevanceConfig()
        stats = empty_statistics(G, clip, config=config)
    device = next(G.parameters()).device
    ws = _sample_ws(G, config, device)[: config.samples]  # [N, num_ws, w_dim], the first of the std samples
    with torch.no_grad():
        base = {k: v.detach() for k, v in G.synthesis.compute_styles(ws).items()}  # {layer: [N, C]}
    index = _channel_index(stats)
    relevance = stats.relevance.clone()
    done = stats.channels_done
    stop_at = len(index) if max_channels is None else min(len(index), done + max_channels)
    n = config.samples
    per_call = max(1, config.batch_size // (2 * n))  # channels per synthesis call
    since_checkpoint = 0
    while done < stop_at:
        chunk = index[done: min(stop_at, done + per_call)]
        rows = _relevance_rows(G, clip, ws, base, chunk, stats.style_mean, stats.style_std, config)
        relevance[done: done + len(chunk)] = rows
        done += len(chunk)
        since_checkpoint += len(chunk)
        if progress is not None:
            progress(done, len(index), "styleclip relevance", None)
        stopping = should_stop is not None and should_stop()
        if checkpoint is not None and (since_checkpoint >= checkpoint_every or done == stop_at or stopping):
            checkpoint(replace(stats, relevance=relevance.clone(), channels_done=done))
            since_checkpoint = 0
        if stopping:
            raise Cancelled(f"stopped after {done} of {len(index)} channels; resume to continue")
    return replace(stats, relevance=relevance, channels_done=done)


def _relevance_rows(G, clip, ws, base, chunk, mean, std, config) -> torch.Tensor:
    """Returns the relevance rows ``[len(chunk), D]`` of the ``(layer, channel)`` pairs in ``chunk``."""
    n = ws.shape[0]
    styles: dict[str, list[torch.Tensor]] = {name: [] for name in base}
    for layer, channel in chunk:
        for sign in (-1.0, 1.0):
            for name, value in base.items():
                value = value.clone()
                if name == layer:
                    centre = mean[layer][channel] if config.center_channel else value[:, channel]
                    value[:, channel] = centre + sign * config.delta * std[layer][channel]
                styles[name].append(value)
    batch = {name: torch.cat(values) for name, values in styles.items()}  # {layer: [2 * K * N, C]}
    all_ws = ws.repeat(2 * len(chunk), 1, 1)  # [2KN, num_ws, w_dim]
    embeddings = []
    with torch.no_grad():
        for start in range(0, all_ws.shape[0], config.batch_size):
            stop = start + config.batch_size
            images = G.synthesis(all_ws[start:stop], styles={k: v[start:stop] for k, v in batch.items()},
                                 noise_mode=config.noise_mode)  # [b, 3, H, W]
            embeddings.append(F.normalize(clip.encode_image(images).to(torch.float32), dim=-1))
    embeddings = torch.cat(embeddings).view(len(chunk), 2, n, -1)  # [K, -/+, N, D]
    change = F.normalize(embeddings[:, 1] - embeddings[:, 0], dim=-1)  # [K, N, D]
    return F.normalize(change.mean(dim=1), dim=-1).cpu()  # [K, D]


# --------------------------------------------------------------------------------------------
# text -> direction


def _templates(kind: str) -> list[str]:
    if kind == "none":
        return ["{}"]
    if kind == "photo":
        return ["a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "{}"]
    if kind == "imagenet":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES  # noqa: PLC0415
        return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
    raise ConfigError(f"templates must be one of {TEMPLATE_SETS}, got {kind!r}")


def prompt_embedding(clip, text: str, *, templates: str = "imagenet") -> torch.Tensor:
    """Returns the unit embedding ``[D]`` of ``text``: mean of its normalised template embeddings."""
    text = text.strip()
    if not text:
        raise ConfigError("a StyleCLIP prompt is empty; type what the face should look like")
    prompts = [template.format(text) for template in _templates(templates)]
    with torch.no_grad():
        embeddings = F.normalize(clip.encode_text(prompts).to(torch.float32), dim=-1)  # [T, D]
    return F.normalize(embeddings.mean(0), dim=0).cpu()


def text_direction(clip, target: str, neutral: str, *, templates: str = "imagenet") -> torch.Tensor:
    """Returns ``delta_t = normalise(E(target) - E(neutral))`` ``[D]`` in CLIP's joint space."""
    difference = prompt_embedding(clip, target, templates=templates) - prompt_embedding(clip, neutral,
                                                                                         templates=templates)
    norm = float(difference.norm())
    if norm < 1e-6:
        raise ConfigError(f"target {target!r} and neutral {neutral!r} embed to the same point; "
                          f"make the target text differ from the neutral text")
    return difference / norm


def channel_relevance(stats: StyleStatistics, delta_t: torch.Tensor) -> torch.Tensor:
    """Returns ``R @ delta_t`` ``[rows]``: how much each style channel moves CLIP along ``delta_t``."""
    if not stats.complete:
        raise DirectionError(f"the StyleCLIP statistics are incomplete ({stats.channels_done} of {stats.rows} "
                             f"channels); finish them with styleclip-stats --resume")
    if delta_t.ndim != 1 or delta_t.shape[0] != stats.relevance.shape[1]:
        raise DirectionError(f"the statistics were measured with a CLIP of embedding size "
                             f"{stats.relevance.shape[1]}, the text direction has {list(delta_t.shape)}; "
                             f"load the CLIP model the statistics were computed with")
    return stats.relevance.to(torch.float32) @ delta_t.to(torch.float32)


def global_direction(stats: StyleStatistics, delta_t: torch.Tensor, *, beta: float = 0.15,
                     name: str = "", default_strength: float = 4.0):
    """Returns the StyleSpace :class:`~pti_core.directions.Direction` for text direction ``delta_t``.

    Channels with ``|relevance| < beta`` get exactly zero; the rest get ``r / max|r| * std``
    (``styles`` payload ``{layer: [1, C]}``, ToRGB layers absent). Apply with strength alpha.
    """
    from .directions import Direction  # noqa: PLC0415
    if beta < 0:
        raise ConfigError(f"beta must be >= 0, got {beta}")
    relevance = channel_relevance(stats, delta_t)  # [rows]
    kept = relevance.abs() >= beta
    if not bool(kept.any()):
        raise DirectionError(f"no style channel reaches |relevance| >= beta={beta:g} (largest is "
                             f"{float(relevance.abs().max()):.3f}); lower beta")
    scaled = torch.where(kept, relevance, torch.zeros_like(relevance))
    scaled = scaled / scaled.abs().max()
    sizes = dict(stats.layers)
    offsets: dict[str, torch.Tensor] = {}
    start = 0
    for layer in stats.perturbed:
        stop = start + sizes[layer]
        offsets[layer] = (scaled[start:stop] * stats.style_std[layer].to(torch.float32))[None]  # [1, C]
        start = stop
    info = {"method": "styleclip_global", "beta": float(beta), "channels_changed": int(kept.sum()),
            "default_strength": float(default_strength),
            "statistics": {k: stats.meta.get(k) for k in ("generator_fingerprint", "clip_name", "source")}}
    return Direction(None, space="s", name=name or "styleclip", kind="direction",
                     source=f"StyleCLIP global direction (beta={beta:g})", strength_range=(-10.0, 10.0),
                     styles=offsets, info=info)


def styleclip_direction(stats: StyleStatistics, clip, target: str, neutral: str, *, beta: float = 0.15,
                        templates: str = "imagenet", default_strength: float = 4.0):
    """Returns the global direction for "neutral -> target" (text direction + :func:`global_direction`)."""
    delta_t = text_direction(clip, target, neutral, templates=templates)
    direction = global_direction(stats, delta_t, beta=beta, name=f"{neutral} -> {target}",
                                 default_strength=default_strength)
    direction.info.update({"target": target, "neutral": neutral, "templates": templates})
    return direction


# --------------------------------------------------------------------------------------------
# applying StyleSpace directions


def channels_changed(direction) -> int:
    """Returns the number of style channels a StyleSpace direction changes (non-zero offsets)."""
    return int(sum(int((v != 0).sum()) for v in direction.styles.values()))


def _style_offsets(direction, layout: Mapping[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Returns ``{layer: [C]}`` of a single StyleSpace direction, checked against ``layout``."""
    label = direction.name or "direction"
    if getattr(direction, "space", None) != "s" or not direction.styles:
        raise DirectionError(f"{label} is not a StyleSpace direction; apply it to the latent instead")
    if direction.num_components != 1:
        raise DirectionError(f"{label} is a set of {direction.num_components} StyleSpace components; pick one first")
    offsets = {}
    for layer, value in direction.styles.items():
        offset = value.reshape(value.shape[-1]) if value.ndim == 2 else value
        if layout is not None:
            if layer not in layout:
                raise DirectionError(f"{label} names style layer {layer!r}, which this generator lacks; "
                                     f"it was made for another generator")
            if offset.ndim != 1 or offset.shape[0] != layout[layer]:
                raise DirectionError(f"{label} has {list(offset.shape)} channels for {layer}, the generator has "
                                     f"{layout[layer]}; it was made for another generator")
        offsets[layer] = offset
    return offsets


def edit_styles(styles: Mapping[str, torch.Tensor], edits: Sequence[tuple[Any, float]]) -> dict[str, torch.Tensor]:
    """Returns ``styles + sum_i strength_i * offsets_i`` (new dict; unedited layers are the same tensors).

    Args:
        styles: ``{layer: [N, C]}`` from ``G.synthesis.compute_styles(ws)``.
        edits: ``[(StyleSpace Direction, strength), ...]``.
    """
    layout = {name: int(value.shape[1]) for name, value in styles.items()}
    edited = dict(styles)
    for direction, strength in edits:
        for layer, offset in _style_offsets(direction, layout).items():
            edited[layer] = edited[layer] + float(strength) * offset.to(edited[layer].device, edited[layer].dtype)
    return edited


def apply_style_edits(G: torch.nn.Module, ws: torch.Tensor, edits: Sequence[tuple[Any, float]], *,
                      noise_mode: str = "const", batch_size: int = 8) -> torch.Tensor:
    """Returns images ``[N, 3, H, W]`` of ``ws`` rendered with StyleSpace edits ``s += sum_i a_i * d_i``.

    Args:
        G: generator (the tuned one after PTI).
        ws: ``[N, num_ws, w_dim]`` latents (W edits, if any, already applied).
        edits: ``[(Direction with space "s", strength), ...]``; an empty list renders ``ws`` unedited.
        noise_mode: synthesis noise ('const' as PTI tunes with, or 'none').
        batch_size: images per synthesis call.

    Strength 0 reproduces ``G.synthesis(ws, noise_mode=noise_mode)`` bit-exactly.
    """
    device = next(G.parameters()).device
    images = []
    with torch.no_grad():
        for chunk in ws.split(batch_size):
            chunk = chunk.to(device, torch.float32)  # [b, num_ws, w_dim]
            styles = edit_styles(G.synthesis.compute_styles(chunk), edits)
            images.append(G.synthesis(chunk, styles=styles, noise_mode=noise_mode))
    return torch.cat(images)


def apply_style_direction(G: torch.nn.Module, ws: torch.Tensor, direction, strength: float = 1.0, *,
                          noise_mode: str = "const") -> torch.Tensor:
    """Returns the image ``[N, 3, H, W]`` of ``ws`` edited by one StyleSpace direction (see
    :func:`apply_style_edits`); strength 0 reproduces ``G.synthesis(ws)`` bit-exactly."""
    return apply_style_edits(G, ws, [(direction, strength)], noise_mode=noise_mode)


# --------------------------------------------------------------------------------------------
# files


def check_layout(stats: StyleStatistics, G: torch.nn.Module) -> None:
    """Raises DirectionError unless the statistics fit ``G``'s StyleSpace (same layers and channels)."""
    layout = style_layout(G)
    if tuple(stats.layers) != tuple(layout):
        ours = ", ".join(f"{n}:{c}" for n, c in layout[:4])
        theirs = ", ".join(f"{n}:{c}" for n, c in stats.layers[:4])
        raise DirectionError(f"StyleCLIP statistics were made for another generator ({len(stats.layers)} style "
                             f"layers: {theirs}, ...), this one has {len(layout)} ({ours}, ...); compute "
                             f"statistics for this generator with styleclip-stats")


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    atomic_write(path, write, overwrite=True)  # callers check for existing files themselves


def save_statistics(stats: StyleStatistics, path: str | Path) -> Path:
    """Writes statistics as one safetensors file (atomically) and returns its path."""
    from safetensors.torch import save_file  # noqa: PLC0415
    path = Path(path)
    tensors = {"relevance": stats.relevance.contiguous()}
    for name, _ in stats.layers:
        tensors[f"style_mean.{name}"] = stats.style_mean[name].contiguous()
        tensors[f"style_std.{name}"] = stats.style_std[name].contiguous()
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "layers": json.dumps([[n, c] for n, c in stats.layers]),
                "perturbed": json.dumps(list(stats.perturbed)),
                "channels_done": str(stats.channels_done),
                "complete": "true" if stats.complete else "false",
                "meta": json.dumps(stats.meta)}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load_statistics(path: str | Path, G: torch.nn.Module | None = None) -> StyleStatistics:
    """Returns statistics from a pack safetensors file or StyleCLIP's ``fs3.npy`` (+ ``S_mean_std``).

    Args:
        path: ``*.safetensors`` written by :func:`save_statistics`, or a published ``fs3.npy``.
        G: generator to check the layout against (required for ``fs3.npy``).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"StyleCLIP statistics {path} not found; compute them with "
                               f"'python -m pti_core styleclip-stats' or get StyleCLIP's fs3.npy + S_mean_std")
    if path.suffix.lower() == ".npy":
        if G is None:
            raise ConfigError("published StyleCLIP statistics (fs3.npy) need the generator to be read")
        return load_published_statistics(path, G)
    from safetensors import safe_open  # noqa: PLC0415
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise DirectionError(f"{path.name} is not a StyleCLIP statistics file (format "
                                     f"{metadata.get('format')!r}); compute one with styleclip-stats")
            if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
                raise DirectionError(f"{path.name} was written by a newer pack; update the pack")
            layers = tuple((str(n), int(c)) for n, c in json.loads(metadata["layers"]))
            perturbed = tuple(json.loads(metadata["perturbed"]))
            relevance = handle.get_tensor("relevance")
            mean = {n: handle.get_tensor(f"style_mean.{n}") for n, _ in layers}
            std = {n: handle.get_tensor(f"style_std.{n}") for n, _ in layers}
            stats = StyleStatistics(layers=layers, perturbed=perturbed, relevance=relevance, style_mean=mean,
                                    style_std=std, channels_done=int(metadata["channels_done"]),
                                    meta=json.loads(metadata.get("meta", "{}")))
    except DirectionError:
        raise
    except Exception as error:  # malformed header / missing tensor
        raise DirectionError(f"cannot read StyleCLIP statistics {path.name} ({error}); recompute them") from error
    _validate(stats, path.name)
    if G is not None:
        check_layout(stats, G)
    return stats


def _validate(stats: StyleStatistics, label: str) -> None:
    sizes = dict(stats.layers)
    rows = sum(sizes.get(n, -10 ** 9) for n in stats.perturbed)
    if rows != stats.relevance.shape[0] or stats.relevance.ndim != 2:
        raise DirectionError(f"{label}: relevance is {list(stats.relevance.shape)}, the layers need {rows} rows")
    for name, channels in stats.layers:
        for kind, table in (("mean", stats.style_mean), ("std", stats.style_std)):
            if tuple(table[name].shape) != (channels,):
                raise DirectionError(f"{label}: style {kind} of {name} has {list(table[name].shape)}, "
                                     f"expected [{channels}]")


# StyleCLIP's published FFHQ files: fs3.npy [6048, 512] (ViT-B/32) and S_mean_std, a pickle of
# (mean, std) lists of 26 float arrays (one per style layer incl. ToRGB, TF order b4.conv1,
# b4.torgb, b8.conv0, b8.conv1, b8.torgb, ...), as written by StyleCLIP's global/ code.


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Allow-listed unpickler: numpy arrays, dtypes, scalars, lists and tuples only."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            import codecs  # noqa: PLC0415

            import numpy  # noqa: PLC0415
            if module == "_codecs":
                return codecs.encode  # protocol-2 pickles store array bytes as encode(str, "latin1")
            if module.startswith("numpy") and module.endswith("multiarray"):
                core = getattr(numpy, "_core", None)
                multiarray = core.multiarray if core is not None else numpy.core.multiarray
                return getattr(multiarray, name)
            return getattr(numpy, name)
        raise UnsafeCheckpointError(f"S_mean_std refers to {module}.{name}, which is not allowed in a statistics "
                                    f"file; it was refused unread")


def read_numpy_pickle(path: str | Path) -> Any:
    """Returns the object of a pickle that may hold only numpy arrays in lists / tuples."""
    from .generators.unpickler import scan_pickle  # noqa: PLC0415

    data = Path(path).read_bytes()
    scan_pickle(data, 0, Path(path).name)  # truncated / length-field or memo bombs: refused before loading
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except UnsafeCheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"cannot read {Path(path).name} ({error}); re-download it") from error


PUBLISHED_STD_CONFIG = RelevanceConfig(samples=1, std_samples=20_000, seed=5, truncation_psi=0.7,
                                       truncation_cutoff=None)


def _read_mean_std(path: Path, layout) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Returns ``(mean, std)`` per layer from StyleCLIP's ``S_mean_std`` pickle, checked against ``layout``."""
    import numpy  # noqa: PLC0415
    content = read_numpy_pickle(path)
    if not isinstance(content, (list, tuple)) or len(content) not in (2, 3):
        raise DirectionError(f"{path.name} should hold (mean, std) lists; it is not StyleCLIP's S_mean_std")
    mean_list, std_list = content[-2], content[-1]
    if len(mean_list) != len(layout) or len(std_list) != len(layout):
        raise DirectionError(f"{path.name} has {len(mean_list)} style layers, this generator has {len(layout)}; "
                             f"the statistics were made for another generator")
    mean, std = {}, {}
    for (name, channels), m, s in zip(layout, mean_list, std_list):
        m = numpy.asarray(m, dtype=numpy.float32).reshape(-1)
        s = numpy.asarray(s, dtype=numpy.float32).reshape(-1)
        if m.shape[0] != channels or s.shape[0] != channels:
            raise DirectionError(f"{path.name} has {m.shape[0]} channels for {name}, this generator has "
                                 f"{channels}; the statistics were made for another generator")
        mean[name], std[name] = torch.from_numpy(m.copy()), torch.from_numpy(s.copy())
    return mean, std


def load_published_statistics(fs3_path: str | Path, G: torch.nn.Module, *,
                              mean_std_path: str | Path | None = None) -> StyleStatistics:
    """Returns StyleCLIP's statistics (``fs3.npy`` [+ ``S_mean_std``]) checked against ``G``.

    ``fs3.npy`` (published in StyleCLIP's repository for FFHQ) has one row per non-ToRGB style
    channel (6048 for a 1024 px StyleGAN2) and one column per CLIP dimension (512 for ViT-B/32).
    ``S_mean_std`` (made locally by StyleCLIP's GetCode.py: a pickle of (mean, std) lists, one
    array per style layer incl. ToRGB, 26 for 1024 px) is looked for beside ``fs3.npy`` when not
    given and read with a numpy-only unpickler; without it the per-channel std is measured from
    ``G`` the same way (psi 0.7, 20k samples).
    """
    import numpy  # noqa: PLC0415
    fs3_path = Path(fs3_path)
    if not fs3_path.is_file():
        raise MissingFileError(f"{fs3_path} not found; StyleCLIP's FFHQ fs3.npy is in its repository under "
                               f"global_directions/npy/ffhq/ (see directions/manifest.json)")
    mean_std_path = Path(mean_std_path) if mean_std_path is not None else fs3_path.parent / "S_mean_std"
    try:
        fs3 = numpy.load(fs3_path, allow_pickle=False)
    except ValueError as error:
        raise DirectionError(f"{fs3_path.name} is not a plain numpy array ({error}); re-download it") from error
    if fs3.ndim != 2:
        raise DirectionError(f"{fs3_path.name} is {list(fs3.shape)}, expected [channels, CLIP dim]")
    layout = style_layout(G)
    perturbed = perturbed_layers(G)
    rows = sum(c for name, c in layout if name in perturbed)
    if fs3.shape[0] != rows:
        raise DirectionError(f"{fs3_path.name} has {fs3.shape[0]} channel rows, this generator has {rows} "
                             f"non-ToRGB style channels; the statistics were made for another generator")
    if mean_std_path.is_file():
        mean, std = _read_mean_std(mean_std_path, layout)
        std_source = mean_std_path.name
    else:
        # StyleCLIP's GetCode.py makes S_mean_std locally (not published): 100k samples, psi 0.7 on every
        # layer. Measure the same from the generator instead.
        mean, std = style_mean_std(G, config=PUBLISHED_STD_CONFIG)
        std_source = f"measured from the generator ({PUBLISHED_STD_CONFIG.std_samples} samples, psi 0.7)"
    relevance = torch.from_numpy(numpy.ascontiguousarray(fs3, dtype=numpy.float32))
    meta = {"source": f"StyleCLIP published statistics ({fs3_path.name}; style std: {std_source})",
            "clip_name": "OpenAI ViT-B/32 (published)"}
    return StyleStatistics(layers=layout, perturbed=perturbed, relevance=relevance, style_mean=mean, style_std=std,
                           channels_done=rows, meta=meta)


# --------------------------------------------------------------------------------------------
# latent mappers (StyleCLIP section 5): a small network per prompt, ws' = ws + 0.1 * strength * M(ws)

MAPPER_GROUPS = (("course_mapping", 0, 4), ("medium_mapping", 4, 8), ("fine_mapping", 8, None))
_MAPPER_LR_MUL = 0.01
_MAPPER_LAYERS = 4


class LatentMapper(torch.nn.Module):
    """StyleCLIP's W+ latent mapper (``LevelsMapper`` or ``SingleMapper``), read from its checkpoint.

    Each group of ws rows (coarse 0-3, medium 4-7, fine 8-; or all rows for a single mapper) goes
    through PixelNorm and four equalised-lr linear layers (lr multiplier 0.01, leaky ReLU 0.2 times
    sqrt 2). As in the reference, PixelNorm normalises over the group's *rows* (dim 1 of
    ``[N, rows, w_dim]``), the axis the published mappers were trained with.
    """

    def __init__(self, groups: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor]]], *, w_dim: int):
        super().__init__()
        self.w_dim = w_dim
        self.groups = tuple(groups)
        for group, layers in groups.items():
            for index, (weight, bias) in enumerate(layers):
                self.register_buffer(f"{group}_{index}_weight", weight.to(torch.float32).clone())
                self.register_buffer(f"{group}_{index}_bias", bias.to(torch.float32).clone())

    def _ranges(self) -> list[tuple[str, int, int | None]]:
        if self.groups == ("mapping",):
            return [("mapping", 0, None)]
        return [(name, start, stop) for name, start, stop in MAPPER_GROUPS if name in self.groups]

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """Returns the mapper output ``[N, num_ws, w_dim]`` (zero on rows of absent groups)."""
        if ws.ndim != 3 or ws.shape[2] != self.w_dim:
            raise ConfigError(f"the mapper works on ws [N, num_ws, {self.w_dim}], got {list(ws.shape)}")
        out = torch.zeros_like(ws, dtype=torch.float32)
        gain = _MAPPER_LR_MUL / self.w_dim ** 0.5
        for group, start, stop in self._ranges():
            x = ws[:, start:stop].to(torch.float32)  # [N, rows, C]
            x = x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)
            for index in range(_MAPPER_LAYERS):
                weight = getattr(self, f"{group}_{index}_weight")
                bias = getattr(self, f"{group}_{index}_bias")
                x = F.leaky_relu(F.linear(x, weight * gain) + bias * _MAPPER_LR_MUL, 0.2) * 2 ** 0.5
            out[:, start:stop] = x
        return out


def load_mapper(path: str | Path) -> LatentMapper:
    """Returns the latent mapper of a StyleCLIP mapper checkpoint (``{"state_dict", "opts"}`` .pt file).

    Only the ``mapper.*`` tensors are used (the file also holds a copy of the generator). Read with
    the pack's restricted ``torch.save`` reader (nothing in the file runs); StyleSpace mappers
    (``work_in_stylespace``) are not supported.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"StyleCLIP mapper {path} not found; StyleCLIP's published mappers (afro, angry, "
                               f"bobcut, mohawk, purple_hair, surprised, ...) are linked from its utils.py "
                               f"(https://github.com/orpatashnik/StyleCLIP); put them in "
                               f"models/stylegan_directions/styleclip_mappers/")
    from .generators.unpickler import load_torch_file  # noqa: PLC0415

    checkpoint = load_torch_file(str(path), source=path.name)  # the pack's restricted reader: nothing runs
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    options = checkpoint.get("opts", {}) if isinstance(checkpoint, Mapping) else {}
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path.name} is not a StyleCLIP mapper checkpoint (no state_dict)")
    if isinstance(options, Mapping) and options.get("work_in_stylespace"):
        raise CheckpointError(f"{path.name} is a StyleSpace mapper; only W+ mappers (LevelsMapper, SingleMapper) "
                              f"are supported")
    groups: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for group in ("course_mapping", "medium_mapping", "fine_mapping", "mapping"):
        prefix = f"mapper.{group}.mapping."
        if f"{prefix}1.weight" not in state:
            continue
        layers = []
        for index in range(1, _MAPPER_LAYERS + 1):  # index 0 is PixelNorm
            weight, bias = state.get(f"{prefix}{index}.weight"), state.get(f"{prefix}{index}.bias")
            if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor) or weight.ndim != 2 \
                    or weight.shape[0] != weight.shape[1] or tuple(bias.shape) != (weight.shape[0],):
                raise CheckpointError(f"{path.name}: mapper layer {prefix}{index} is missing or malformed")
            layers.append((weight, bias))
        groups[group] = layers
    if not groups or ("mapping" in groups and len(groups) > 1):
        raise CheckpointError(f"{path.name} has no StyleCLIP W+ mapper weights (mapper.course_mapping..., "
                              f"mapper.mapping...)")
    dims = {weight.shape[0] for layers in groups.values() for weight, _ in layers}
    if len(dims) != 1:
        raise CheckpointError(f"{path.name}: mapper layers have different widths {sorted(dims)}")
    return LatentMapper(groups, w_dim=dims.pop()).eval()


def apply_mapper(mapper: LatentMapper, ws: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Returns ``ws + 0.1 * strength * mapper(ws)`` (the reference uses strength 1); strength 0 returns ``ws``."""
    with torch.no_grad():
        delta = mapper.to(ws.device)(ws)
    return ws + (0.1 * float(strength)) * delta.to(ws.dtype)


MANIFEST_PATH = Path(__file__).resolve().parent.parent / "directions" / "manifest.json"


def published_statistics_entries(path: str | Path | None = None, *, key: str = "styleclip_statistics") -> list[dict]:
    """Returns well-known StyleCLIP files declared in directions/manifest.json under ``key``
    (``styleclip_statistics`` or ``styleclip_mappers``)."""
    path = Path(path) if path is not None else MANIFEST_PATH
    try:
        return [dict(e) for e in json.loads(path.read_text(encoding="utf-8")).get(key, [])]
    except (OSError, ValueError):
        return []


def statistics_hint(filename: str, *, fallback: str | None = None) -> str:
    """Returns where a well-known statistics or mapper file comes from (else ``fallback``, or how to
    compute statistics)."""
    for key in ("styleclip_statistics", "styleclip_mappers"):
        for entry in published_statistics_entries(key=key):
            if entry.get("file") == filename or Path(entry.get("file", "")).name == filename:
                return (f"download {entry['url']} ({entry.get('model', 'its generator')}) to "
                        f"models/stylegan_directions/{entry['file']}")
    return fallback or "compute statistics with 'python -m pti_core styleclip-stats --model ... --clip ... --out ...'"


def default_statistics_name(G: torch.nn.Module, clip) -> str:
    """Returns the cache file name for ``G`` + ``clip``: ``styleclip_<gen sha>_<clip sha>.safetensors``."""
    return f"styleclip_{generator_fingerprint(G)[:12]}_{clip.fingerprint[:12]}.safetensors"


__all__ = [
    "RelevanceConfig",
    "StyleStatistics",
    "channels_changed",
    "compute_relevance",
    "empty_statistics",
    "style_mean_std",
    "style_layout",
    "text_direction",
    "prompt_embedding",
    "channel_relevance",
    "global_direction",
    "styleclip_direction",
    "edit_styles",
    "apply_style_direction",
    "apply_style_edits",
    "save_statistics",
    "load_statistics",
    "load_published_statistics",
    "check_layout",
    "is_torgb",
    "perturbed_layers",
    "published_statistics_entries",
    "statistics_hint",
    "default_statistics_name",
    "LatentMapper",
    "load_mapper",
    "apply_mapper",
]
