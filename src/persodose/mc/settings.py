"""Settings of a Monte Carlo run and the backends that can run it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from persodose.errors import InputError
from persodose.mc.tables import TransportSettings

#: Default chunks per batch: a few per CPU core (load balance), and for CUDA one thread per
#: chunk, about 2.6 waves of an H100: the kernels use ~150 registers per thread (ptxas for
#: sm_90, ``python benchmarks/gpu_resources.py``), so 384 threads per SM, 50688 on 132 SMs,
#: are resident at once; several waves even out threads whose histories run long. The
#: particle stacks take 8 KiB per chunk on the device (1 GiB at 131072 chunks).
DEFAULT_CHUNKS = {"cpu": 32, "cuda": 131072}

#: Emission categories a decay run can be restricted to, named after the ICRP Publication 107
#: radiation types they take (ICRP 2008, Ann. ICRP 38(3); mapping in
#: :data:`persodose.mc.sources.CATEGORY_LINES`): ``beta`` (β-, with delayed β-), ``positron``
#: (β+), ``gamma``, ``xray``, ``ic`` (internal-conversion electrons), ``auger`` and ``alpha``
#: (alpha particles and their recoils). Annihilation photons are not a decay emission: the
#: transport makes them where each positron stops.
EMISSION_CATEGORIES = ("beta", "positron", "gamma", "xray", "ic", "auger", "alpha")


def normalise_emissions(emissions) -> tuple[str, ...] | None:
    """The canonical form of an emission selection: ``None`` for all, else a tuple in
    :data:`EMISSION_CATEGORIES` order.

    Args:
        emissions: ``None``, ``"all"``, a comma list (``"beta,gamma,xray"``, case-insensitive)
            or a sequence of category names. A selection of every category is ``None``.

    Raises:
        InputError: an unknown name, an empty selection or ``all`` mixed with other names.
    """
    if emissions is None:
        return None
    items = emissions.split(",") if isinstance(emissions, str) else list(emissions)
    names = [str(v).strip().lower() for v in items]
    names = [v for v in names if v]
    valid = ", ".join(EMISSION_CATEGORIES)
    if not names:
        raise InputError(f"no emissions selected; choose all or a comma list of {valid}")
    if "all" in names:
        if len(set(names)) > 1:
            raise InputError("'all' cannot be combined with other emissions")
        return None
    unknown = [v for v in names if v not in EMISSION_CATEGORIES]
    if unknown:
        hint = " (annihilation photons come from positrons: select positron)" if "annihilation" in unknown else ""
        raise InputError(f"unknown emission {unknown[0]!r}{hint}; choose all or a comma list of {valid}")
    chosen = tuple(c for c in EMISSION_CATEGORIES if c in names)
    return None if len(chosen) == len(EMISSION_CATEGORIES) else chosen


def check_backend(backend: str, *, require_device: bool = True) -> str:
    """``backend`` if it is known (and, with ``require_device``, can run here).

    Raises:
        InputError: an unknown backend.
        OptionalDependencyError: ``"cuda"`` with ``require_device`` on a machine without a
            usable NVIDIA GPU (one line, before any work is done).
    """
    if backend not in DEFAULT_CHUNKS:
        raise InputError(f"unknown Monte Carlo backend {backend!r}; choose {' or '.join(DEFAULT_CHUNKS)}")
    if backend == "cuda" and require_device:
        from persodose.mc import gpu

        gpu.require_cuda()
    return backend


@dataclass
class MCSettings:
    """Settings of a Monte Carlo run (serialised into its provenance)."""

    n_batches: int = 10  #: independent batches (uncertainty from their spread)
    #: parallel work units per batch, each with its own random stream; default
    #: :data:`DEFAULT_CHUNKS` of the backend (the same chunks give the same streams on both)
    chunks_per_batch: int | None = None
    seed: int = 12345  #: master seed
    transport: TransportSettings = field(default_factory=TransportSettings)
    #: "cpu" (Numba, parallel over chunks) or "cuda" (one GPU thread per chunk)
    backend: str = "cpu"
    #: emission categories a decay run emits (:data:`EMISSION_CATEGORIES`); ``None`` = all.
    #: A comma string or sequence is accepted and normalised by :func:`normalise_emissions`.
    emissions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.emissions = normalise_emissions(self.emissions)
        check_backend(self.backend, require_device=False)  # settings may be made where they do not run
        if self.chunks_per_batch is None:
            self.chunks_per_batch = DEFAULT_CHUNKS[self.backend]
        if int(self.n_batches) < 2:
            raise InputError("n_batches must be at least 2 (uncertainty needs several batches)")
        if int(self.chunks_per_batch) < 1:
            raise InputError("chunks_per_batch must be at least 1")
        if not (0 <= int(self.seed) < 2**63):
            raise InputError("seed must be a non-negative 63-bit integer")


def settings_dict(settings: MCSettings) -> dict:
    """Plain dictionary of the settings (for provenance)."""
    return asdict(settings)
