"""DblurDoseNet: a residual CNN from 177Lu SPECT and density to the dose rate of the true activity.

Li, Fessler, Mikell, Wilderman and Dewaraja, "DblurDoseNet: a deep residual learning network
for voxel radionuclide dosimetry compensating for SPECT imaging resolution", Med. Phys. 2022
(``seeds/dblurdosenet-residual-cnn-spect-dosimetry.txt``). What the paper fixes, and how it is
built here:

* inputs: the SPECT activity and the density map, 11 axial slices at a time; output: the dose
  rate of the middle slice. Three 3-D convolutions (kernels 7x7x5, 7x7x3, 7x7x3 in x, y, z;
  "same" in-plane, none in depth, so 11 slices become 3), then a 2-D U-Net with 4 down- and
  up-sampling steps whose first level has 16 filters, doubling to at most 128 (levels 16, 32,
  64, 128, 128); ReLU after each convolution.
* residual learning: the U-Net's output is added to the dose rate of voxel S-value convolution
  with density scaling (the ``dsv`` dose method on the SPECT), and the result is set to zero
  where the density is below 0.1 g/cm3.
* an 11-slice sliding window over all slices, the first and last slices replicated at the ends;
  the SPECT normalised to unit sum and the output scaled back (done by the dataset kind
  ``spect-doserate`` and the dose method ``dblurdosenet``, not by the network).
* MSE loss, Adam, learning rate 1e-3 with reduce-on-plateau (``persodose train``).

What the paper does not give, chosen here and said so: the number of feature maps of the 3-D
layers (``features_3d``, default 8: the 3-D layers cost most of the time on a CPU) and how the
3 remaining slices enter the U-Net (their features are stacked as channels, 3 x features_3d);
batch normalisation in the U-Net's double convolutions, max-pooling down and transposed
convolutions up (the usual U-Net of Ronneberger et al. 2015, the paper's ref. 8).

The sliding window is computed for a whole stack at once: the 3-D layers are translation
invariant in depth, so they run once over the stack padded by 5 replicated slices at each end,
and output slice ``z`` takes the features of slices ``z-1, z, z+1``. This gives exactly the
numbers of 11-slice packs run one by one (tested) at a fifth of the cost of the 3-D part. With
``margin=m`` (training on slabs, :attr:`NetworkSpec.depth_margin`) the stack is not padded and
only its inner slices are computed.

Channels of a sample (``C, D, H, W``), in the units the dataset kind stores: 0 the normalised
SPECT, 1 the density (g/cm3), 2 the DSV dose rate of the normalised SPECT. The scale rule keeps
the density in g/cm3 (the 0.1 g/cm3 mask is applied inside) and gives the DSV channel the
target's scale, so that the residual is added in the target's units.

Ablations of the paper's Table 3 are settings: ``residual=False`` (the DSV map is not added)
and ``mode="2d"`` (no 3-D layers: the 11 slices of both images are the U-Net's 22 channels).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from persodose.dl.networks import register_network
from persodose.errors import InputError

__all__ = ["DblurDoseNetSettings", "WINDOW", "HALF_WINDOW", "AIR_DENSITY_G_CM3", "dblurdosenet", "unet_levels"]

#: Slices of the sliding window and half of it (the paper: 11 slices, 3.3 cm at 3 mm).
WINDOW = 11
HALF_WINDOW = WINDOW // 2
#: Below this density (g/cm3) the dose rate is set to zero (the paper; air gaps).
AIR_DENSITY_G_CM3 = 0.1
#: Channels of a sample: normalised SPECT, density g/cm3, DSV dose rate of the normalised SPECT.
CH_SPECT, CH_DENSITY, CH_DSV = 0, 1, 2


@dataclass(frozen=True)
class DblurDoseNetSettings:
    """Settings of ``dblurdosenet``.

    Attributes:
        features_3d: feature maps of each 3-D convolution (not given by the paper).
        first_filters: filters of the U-Net's first level (the paper: 16).
        max_filters: the most filters of a level (the paper: 128).
        levels: down-sampling steps of the U-Net (the paper: 4).
        residual: add the DSV dose rate to the U-Net's output (the paper's residual learning).
        mode: ``"3d"`` (the paper's network) or ``"2d"`` (ablation: no 3-D layers).
    """

    features_3d: int = 8
    first_filters: int = 16
    max_filters: int = 128
    levels: int = 4
    residual: bool = True
    mode: str = "3d"

    def __post_init__(self) -> None:
        if not (1 <= self.features_3d <= 128 and 1 <= self.first_filters <= self.max_filters <= 1024):
            raise InputError("dblurdosenet: features_3d must be 1..128 and 1 <= first_filters <= max_filters <= 1024, "
                             f"got {self.features_3d}, {self.first_filters}, {self.max_filters}")
        if not 1 <= self.levels <= 6:
            raise InputError(f"dblurdosenet: levels must be 1..6, got {self.levels}")
        if self.mode not in ("3d", "2d"):
            raise InputError(f"dblurdosenet: mode must be '3d' or '2d', got {self.mode!r}")


def unet_levels(settings: DblurDoseNetSettings) -> list[int]:
    """Filters per U-Net level: first_filters doubling up to max_filters (the paper: 16..128)."""
    return [min(settings.first_filters * 2 ** i, settings.max_filters) for i in range(settings.levels + 1)]


def _scale_rule(s_in, s_out):
    """Density stays in g/cm3 (scale 1); the DSV channel gets the target's scale."""
    s_in[CH_DENSITY] = 1.0
    s_in[CH_DSV] = s_out[0]
    return s_in, s_out


@functools.lru_cache(maxsize=None)
def _classes():
    import torch
    from torch import nn

    def double_conv(a: int, b: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                             nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))

    class UNet2D(nn.Module):
        """2-D U-Net: double 3x3 convolutions, max-pooling down, transposed convolutions up, 1x1 head."""

        def __init__(self, in_channels: int, widths: list[int]):
            super().__init__()
            self.down = nn.ModuleList()
            c = in_channels
            for w in widths:
                self.down.append(double_conv(c, w))
                c = w
            self.upsample = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2)
                                          for i in range(len(widths) - 1, 0, -1))
            self.up = nn.ModuleList(double_conv(2 * widths[i - 1], widths[i - 1])
                                    for i in range(len(widths) - 1, 0, -1))
            self.head = nn.Conv2d(widths[0], 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, block in enumerate(self.down):
                x = block(x)
                if i < len(self.down) - 1:
                    skips.append(x)
                    x = nn.functional.max_pool2d(x, 2)
            for upsample, block in zip(self.upsample, self.up):
                x = block(torch.cat([upsample(x), skips.pop()], 1))
            return self.head(x)

    class DblurDoseNet(nn.Module):
        """``(B, 3, D, H, W)`` (SPECT, density, DSV) -> dose rate ``(B, 1, D - 2 margin, H, W)``."""

        def __init__(self, s: DblurDoseNetSettings):
            super().__init__()
            self.mode, self.residual, f = s.mode, s.residual, s.features_3d
            self.multiple = 2 ** s.levels
            if s.mode == "3d":
                self.depth = nn.Sequential(
                    nn.Conv3d(2, f, (5, 7, 7), padding=(0, 3, 3)), nn.ReLU(inplace=True),
                    nn.Conv3d(f, f, (3, 7, 7), padding=(0, 3, 3)), nn.ReLU(inplace=True),
                    nn.Conv3d(f, f, (3, 7, 7), padding=(0, 3, 3)), nn.ReLU(inplace=True))
                self.unet = UNet2D(3 * f, unet_levels(s))
            else:
                self.depth = None
                self.unet = UNet2D(2 * WINDOW, unet_levels(s))

        def forward(self, x: torch.Tensor, margin: int = 0) -> torch.Tensor:
            h0, w0 = x.shape[-2:]
            q = self.multiple
            ph, pw = -h0 % q, -w0 % q
            if ph or pw:  # in-plane zero padding (air) to the U-Net's multiple, cropped off at the end
                x = nn.functional.pad(x, (0, pw, 0, ph))
            return self._forward(x, margin)[..., :h0, :w0]

        def _forward(self, x: torch.Tensor, margin: int) -> torch.Tensor:
            b, _, d, h, w = x.shape
            if margin:
                if margin < HALF_WINDOW or d <= 2 * margin:
                    raise ValueError(f"margin {margin} must be >= {HALF_WINDOW} and leave slices of {d}")
                img = x[:, :2, margin - HALF_WINDOW:d - margin + HALF_WINDOW]
            else:  # the sliding window's replicated end slices
                img = torch.cat([x[:, :2, :1].expand(-1, -1, HALF_WINDOW, -1, -1), x[:, :2],
                                 x[:, :2, -1:].expand(-1, -1, HALF_WINDOW, -1, -1)], 2)
            n = d - 2 * margin
            if self.depth is not None:
                if img.device.type == "cpu":  # oneDNN's fast path for 3-D convolutions
                    img = img.contiguous(memory_format=torch.channels_last_3d)
                feat = self.depth(img).contiguous()  # (B, F, n + 2, H, W)
                k = 3
            else:
                feat, k = img, WINDOW  # (B, 2, n + 10, H, W)
            # output slice z takes the k feature slices centred on it, stacked as channels
            packs = torch.cat([feat[:, :, j:j + n] for j in range(k)], 1)  # (B, k F, n, H, W)
            packs = packs.transpose(1, 2).reshape(b * n, -1, h, w)
            y = self.unet(packs).reshape(b, n, 1, h, w).permute(0, 2, 1, 3, 4)
            inner = slice(margin, d - margin)
            if self.residual:
                y = y + x[:, CH_DSV:CH_DSV + 1, inner]
            return y * (x[:, CH_DENSITY:CH_DENSITY + 1, inner] >= AIR_DENSITY_G_CM3).to(y.dtype)

    return DblurDoseNet


@register_network("dblurdosenet", dataset_kind="spect-doserate", in_channels=3, out_channels=1,
                  settings=DblurDoseNetSettings, loss="mse", spatial_multiple=1, min_spatial=1,
                  depth_margin=HALF_WINDOW, scale_rule=_scale_rule,
                  summary="DblurDoseNet (Li et al. 2022): SPECT + density -> dose rate, residual over DSV")
def dblurdosenet(settings: DblurDoseNetSettings):
    """DblurDoseNet: 3-D depth features, a 2-D U-Net, the DSV dose rate added (see the module doc)."""
    return _classes()(settings)
