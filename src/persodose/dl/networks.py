"""Registry of networks: name -> builder(settings) -> ``torch.nn.Module``.

A network is one builder function plus one :func:`register_network` call: its settings
dataclass, the dataset kind it trains on (the ``kind`` of a ``persodose dataset make``
manifest), its input and target channel counts and its loss. :func:`persodose.dl.train.train`
and :func:`persodose.dl.evaluate.evaluate` find it here by name, so a new network needs no
other change.

PyTorch is imported only inside the builders (never when this module is imported).
:func:`build_network` wraps the builder's module in :func:`scaled`: inputs and targets are
divided by per-channel scales (the root mean square of the training split, saved as buffers
in the weights), so that a network sees numbers near 1 whatever the units (Gy, Bq s) and
still takes and gives physical units.

Built-in:

* ``residual-cnn3d``: a tiny fully convolutional 3-D regression network (a few 3x3x3
  convolutions and a 1x1x1 residual path from the input to the output), for the tests and
  as the template of a network; trains on the dataset kind ``density-led`` (inputs: density
  g/cm3 and time-integrated activity; target: dose).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

from persodose.errors import InputError
from persodose.registry import Registry
from persodose.settings import resolve_settings

__all__ = ["NetworkSpec", "NETWORKS", "LOSSES", "register_network", "get_network", "available_networks",
           "build_network", "scaled", "set_scales", "channel_rms", "ChannelRMS", "apply_scales", "check_shapes", "ResidualCNN3DSettings"]

#: Losses a network may declare (the training loop maps them to torch functions).
LOSSES = ("mse", "l1", "smooth_l1")


@dataclass(frozen=True)
class NoNetworkSettings:
    """A network without settings."""


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network.

    Attributes:
        name: registry name (lower case).
        builder: ``builder(settings) -> torch.nn.Module``; imports PyTorch itself.
        settings_type: frozen dataclass of its settings.
        dataset_kind: the dataset ``kind`` it trains on.
        in_channels: input channels ``C`` of a sample ``(C, D, H, W)``.
        out_channels: target channels ``C'``.
        loss: one of :data:`LOSSES` (default ``"mse"``, the L2 loss).
        spatial_multiple: each of D, H, W must be a multiple of it (down-sampling networks).
        min_spatial: the least D, H, W, voxels.
        summary: one line for listings.
        channels_last_cpu: run in ``torch.channels_last_3d`` memory format on the CPU (about 4x
            faster for dilated 3-D convolutions with oneDNN; no gain for plain small ones).
        depth_margin: slices at each end of D that the loss leaves out. A network whose output
            slice needs neighbouring input slices (a sliding window in depth) is trained on slabs
            whose end slices lack that context: the training loop calls its core with
            ``margin=depth_margin`` (the core gives only the inner ``D - 2 margin`` slices) and
            compares them with the same slices of the target. 0: the whole sample.
        scale_rule: ``rule(input_scales, target_scales) -> (input_scales, target_scales)``,
            applied to the training split's RMS scales before they are stored (for example to
            give an input channel that the network adds to its output the target's scale, or
            to keep a channel in physical units); None: the RMS scales as they are.
        output_crop: voxels the network's output grid loses on each side of each axis (a network
            of unpadded, "valid" convolutions: input ``(C, D, H, W)``, output
            ``(C', D - 2k, H - 2k, W - 2k)``); 0: the output keeps the input grid.
        channel_window: the output channels are the voxels of a window of this shape (z, y, x),
            flattened in C order (a network predicting a small map per voxel, like a dose kernel);
            ``persodose evaluate`` scores each sample's window as one image. ``()``: channels are
            channels.
    """

    name: str
    builder: Callable[[Any], Any]
    settings_type: type = NoNetworkSettings
    dataset_kind: str = ""
    in_channels: int = 1
    out_channels: int = 1
    loss: str = "mse"
    spatial_multiple: int = 1
    min_spatial: int = 1
    summary: str = ""
    channels_last_cpu: bool = False
    depth_margin: int = 0
    scale_rule: Callable[[Any, Any], tuple] | None = None
    output_crop: int = 0
    channel_window: tuple = ()

    def settings(self, values: Any = None) -> Any:
        """Its settings from ``None`` (defaults), an instance or a mapping (strings parsed)."""
        return resolve_settings(values, self.settings_type, owner=self.name, what="network")


NETWORKS: Registry[NetworkSpec] = Registry("network", builtins=["persodose.dl.dblurdosenet", "persodose.dl.kernel_dnn",
                                                               "persodose.dl.ct_deepdose"],
                                           identity=lambda spec: spec.builder)


def register_network(name: str, builder: Callable[[Any], Any] | None = None, *, dataset_kind: str,
                     in_channels: int, out_channels: int, settings: type = NoNetworkSettings, loss: str = "mse",
                     spatial_multiple: int = 1, min_spatial: int = 1, summary: str = "",
                     channels_last_cpu: bool = False, depth_margin: int = 0,
                     scale_rule: Callable[[Any, Any], tuple] | None = None, output_crop: int = 0,
                     channel_window: tuple = ()) -> Any:
    """Register a network under ``name``; usable directly or as a decorator of the builder.

    Raises:
        ValueError: a programming error (bad declaration, another builder under a taken name).
    """
    if builder is None:
        return lambda fn: register_network(name, fn, dataset_kind=dataset_kind, in_channels=in_channels,
                                           out_channels=out_channels, settings=settings, loss=loss,
                                           spatial_multiple=spatial_multiple, min_spatial=min_spatial,
                                           summary=summary, channels_last_cpu=channels_last_cpu,
                                           depth_margin=depth_margin, scale_rule=scale_rule,
                                           output_crop=output_crop, channel_window=channel_window)
    if loss not in LOSSES:
        raise ValueError(f"network {name!r}: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if not (isinstance(settings, type) and dataclasses.is_dataclass(settings)):
        raise ValueError(f"network {name!r}: settings must be a dataclass type")
    if int(depth_margin) < 0 or int(output_crop) < 0 or (scale_rule is not None and not callable(scale_rule)):
        raise ValueError(f"network {name!r}: depth_margin and output_crop must be >= 0 and scale_rule callable")
    if channel_window and (len(channel_window) != 3 or math.prod(channel_window) != out_channels):
        raise ValueError(f"network {name!r}: channel_window must be 3 sizes whose product is out_channels")
    if min(in_channels, out_channels, spatial_multiple, min_spatial) < 1 or not str(dataset_kind).strip():
        raise ValueError(f"network {name!r}: channels, spatial_multiple and min_spatial must be >= 1 and "
                         "dataset_kind given")
    doc = (builder.__doc__ or "").strip().splitlines()
    spec = NetworkSpec(Registry.key(name), builder, settings, str(dataset_kind), int(in_channels),
                       int(out_channels), loss, int(spatial_multiple), int(min_spatial),
                       summary or (doc[0] if doc else ""), bool(channels_last_cpu), int(depth_margin), scale_rule,
                       int(output_crop), tuple(int(v) for v in channel_window))
    NETWORKS.add(name, spec)
    return builder


def get_network(name: str) -> NetworkSpec:
    """The network registered as ``name``; an unknown name lists the known ones (InputError)."""
    return NETWORKS.get(name)


def available_networks() -> list[str]:
    """The registered network names, sorted."""
    return NETWORKS.names()


def build_network(name: str, settings: Any = None) -> tuple[NetworkSpec, Any, Any]:
    """``(spec, settings, module)``: the network ``name`` built with its settings (imports PyTorch).

    The module is the builder's network inside :func:`scaled` (unit scales until training
    sets them), so that it takes and gives physical units.
    """
    spec = get_network(name)
    resolved = spec.settings(settings)
    return spec, resolved, scaled(spec.builder(resolved), spec.in_channels, spec.out_channels)


@functools.lru_cache(maxsize=None)
def _scaled_class():
    import torch
    from torch import nn

    class ScaledNetwork(nn.Module):
        """``y = target_scale * core(x / input_scale)``, scales per channel (buffers, saved with the weights)."""

        def __init__(self, core: nn.Module, in_channels: int, out_channels: int):
            super().__init__()
            self.core = core
            self.register_buffer("input_scale", torch.ones(1, in_channels, 1, 1, 1))
            self.register_buffer("target_scale", torch.ones(1, out_channels, 1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.normalised(x) * self.target_scale

        def normalised(self, x: torch.Tensor, **kw) -> torch.Tensor:
            """The core's output, in units of ``target_scale`` (what the loss is computed on);
            keywords (``margin``) go to the core."""
            return self.core(x / self.input_scale, **kw)

    return ScaledNetwork


def scaled(core: Any, in_channels: int, out_channels: int) -> Any:
    """``core`` wrapped so that inputs are divided by ``input_scale`` and outputs multiplied by
    ``target_scale`` (per channel; set from the training data by :func:`set_scales`).

    Dose maps and activities span many decades in SI units (Gy, Bq s); the wrapper lets every
    network train on numbers near 1 and still take and give physical units, the scales
    travelling in its state dict.
    """
    return _scaled_class()(core, int(in_channels), int(out_channels))


class ChannelRMS:
    """Running per-channel root mean square of chunks ``(N_i, C, D, H, W)`` (e.g. one per shard).

    Sums of squares are taken chunk by chunk in float64 and added in order, so the same chunks
    give the same bits whether they were read one shard at a time or all at once.
    """

    def __init__(self):
        self.total, self.count = None, 0

    def add(self, a) -> None:
        import numpy as np

        a = np.asarray(a, dtype=np.float64)
        sq = np.sum(np.square(a), axis=(0, 2, 3, 4))
        self.total = sq if self.total is None else self.total + sq
        self.count += a.shape[0] * int(np.prod(a.shape[2:]))

    def value(self):
        """The RMS per channel, 1 for an all-zero or non-finite channel."""
        import numpy as np

        if self.total is None or self.count == 0:
            raise ValueError("channel RMS of no sample")
        v = np.sqrt(self.total / self.count)
        return np.where(np.isfinite(v) & (v > 0), v, 1.0)


def channel_rms(chunks):
    """Per-channel root mean square of an iterable of chunks (:class:`ChannelRMS`)."""
    acc = ChannelRMS()
    for a in chunks:
        acc.add(a)
    return acc.value()


def apply_scales(model: Any, s_in, s_out) -> tuple[list[float], list[float]]:
    """Set ``model``'s ``input_scale`` and ``target_scale`` (per channel); returns them as lists."""
    import torch

    with torch.no_grad():
        model.input_scale.copy_(torch.as_tensor(s_in, dtype=model.input_scale.dtype).view(1, -1, 1, 1, 1))
        model.target_scale.copy_(torch.as_tensor(s_out, dtype=model.target_scale.dtype).view(1, -1, 1, 1, 1))
    return [float(v) for v in s_in], [float(v) for v in s_out]


def set_scales(model: Any, inputs, targets) -> tuple[list[float], list[float]]:
    """Set ``model``'s scales to the per-channel root mean square (:func:`channel_rms`) of
    ``inputs`` (N, C, D, H, W) and ``targets`` (N, C', D, H, W), each an array or a list of
    chunks of one (1 for an all-zero channel); returns them as lists."""
    def as_chunks(a):
        return [a] if hasattr(a, "shape") else list(a)

    return apply_scales(model, channel_rms(as_chunks(inputs)), channel_rms(as_chunks(targets)))


def check_shapes(spec: NetworkSpec, input_shape, target_shape, where: str = "dataset") -> None:
    """Refuse sample shapes ``(C, D, H, W)`` / ``(C', D, H, W)`` that do not fit ``spec``.

    Raises:
        InputError: wrong rank, channel counts, spatial sizes that differ or do not fit.
    """
    ins, tgt = tuple(int(v) for v in input_shape), tuple(int(v) for v in target_shape)
    if len(ins) != 4 or len(tgt) != 4:
        raise InputError(f"{where}: samples must be (C, D, H, W); got input {list(ins)}, target {list(tgt)}")
    if ins[0] != spec.in_channels or tgt[0] != spec.out_channels:
        raise InputError(f"{where}: network {spec.name!r} takes {spec.in_channels} input and gives "
                         f"{spec.out_channels} target channel(s); the data have {ins[0]} and {tgt[0]}")
    k = spec.output_crop
    if tuple(v - 2 * k for v in ins[1:]) != tgt[1:]:
        keeps = "keeps the grid" if k == 0 else f"gives the input grid less {k} voxel(s) on each side"
        raise InputError(f"{where}: input grid {list(ins[1:])} and target grid {list(tgt[1:])} do not fit; "
                         f"network {spec.name!r} {keeps}")
    if ins[1] <= 2 * spec.depth_margin:
        raise InputError(f"{where}: network {spec.name!r} leaves {spec.depth_margin} slices at each end out of "
                         f"the loss; samples of {ins[1]} slices leave none")
    bad = [s for s in ins[1:] if s < spec.min_spatial or s % spec.spatial_multiple]
    if bad:
        raise InputError(f"{where}: grid {list(ins[1:])} does not fit network {spec.name!r} (each of D, H, W "
                         f"must be >= {spec.min_spatial} and a multiple of {spec.spatial_multiple})")


# --------------------------------------------------------------------------- residual-cnn3d
@dataclass(frozen=True)
class ResidualCNN3DSettings:
    """Settings of ``residual-cnn3d``.

    Attributes:
        width: feature channels of the hidden convolutions.
        depth: number of hidden 3x3x3 convolutions (after the first one).
    """

    width: int = 8
    depth: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.width <= 256) or not (0 <= self.depth <= 16):
            raise InputError(f"residual-cnn3d: width must be 1..256 and depth 0..16, got {self.width}, {self.depth}")


@functools.lru_cache(maxsize=None)
def _residual_cnn3d_class():
    import torch
    from torch import nn

    class ResidualCNN3D(nn.Module):
        """``y = head(body(x)) + skip(x)``: 3x3x3 convolutions (ReLU) and a 1x1x1 residual path."""

        def __init__(self, in_channels: int, out_channels: int, width: int, depth: int):
            super().__init__()
            layers: list[nn.Module] = [nn.Conv3d(in_channels, width, 3, padding=1), nn.ReLU()]
            for _ in range(depth):
                layers += [nn.Conv3d(width, width, 3, padding=1), nn.ReLU()]
            self.body = nn.Sequential(*layers)
            self.head = nn.Conv3d(width, out_channels, 3, padding=1)
            self.skip = nn.Conv3d(in_channels, out_channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x)) + self.skip(x)

    return ResidualCNN3D


@register_network("residual-cnn3d", dataset_kind="density-led", in_channels=2, out_channels=1,
                  settings=ResidualCNN3DSettings, loss="mse", min_spatial=3)
def residual_cnn3d(settings: ResidualCNN3DSettings):
    """Tiny 3-D residual CNN (density + time-integrated activity -> dose), for tests and as a template."""
    return _residual_cnn3d_class()(2, 1, settings.width, settings.depth)
