"""The version of the Monte Carlo physics and of the data it is computed from.

Anything cached from Monte Carlo results (the voxel S-value kernels of
:func:`persodose.mc.kernels.cached_kernel`) is keyed by :func:`physics_tag`, so that a
cache written by another physics or other data is never read back.

Bump :data:`PHYSICS_VERSION` (here, and only here) with every change that alters what the
transport computes for a given seed: sampling, cross sections or their tabulation, cut-offs,
materials, the random-stream layout. Refactoring that keeps the tallies bitwise identical
does not need a bump. The versions of the two data packages the physics reads,
``icrp107-database`` (decay data) and ``xraylib`` (photon cross sections), are part of the
tag on their own, so upgrading either also misses the cache.
"""

from __future__ import annotations

import re

#: Version of the transport physics (bump on any change of what a seed computes).
#: 3 (2026-12-03): the decays' control variate judges its activity rule on the decays done,
#: from a second tally (runs stopped early at a target change; fixed-count runs are bitwise
#: the same as with 2).
PHYSICS_VERSION = 3

#: The data packages whose versions are part of the physics tag (distribution names).
DATA_PACKAGES = ("icrp107-database", "xraylib")


def data_versions() -> dict[str, str]:
    """``{"physics": PHYSICS_VERSION, <data package>: <its version or "none">}`` as strings."""
    from importlib import metadata

    out = {"physics": str(PHYSICS_VERSION)}
    for dist in DATA_PACKAGES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "none"
    return out


def physics_tag(versions: dict[str, str] | None = None) -> str:
    """A file-name-safe tag of :func:`data_versions`, e.g. ``phys1-icrp107-0.0.3-xraylib-4.1.5``."""
    v = data_versions() if versions is None else versions
    parts = [f"phys{v['physics']}"] + [f"{name.split('-')[0]}-{v.get(name, 'none')}" for name in DATA_PACKAGES]
    return re.sub(r"[^A-Za-z0-9.\-]", "_", "-".join(parts))
