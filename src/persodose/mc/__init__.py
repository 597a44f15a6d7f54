"""The persodose Monte Carlo engine (coupled photon, electron and positron transport).

Public API::

    from persodose.mc import VoxelPhantom, MCSettings, simulate_decays, simulate_point_source, simulate_beam

``MCSettings(backend="cuda")`` runs the same physics on an NVIDIA GPU (:mod:`persodose.mc.gpu`).

See :mod:`persodose.mc.transport` for the physics and :mod:`persodose.mc.engine` for runs,
batches and uncertainties.
"""

from persodose.mc.engine import (MCResult, MCSettings, Tally, VoxelPhantom, simulate_beam,  # noqa: F401
                                 simulate_decays, simulate_point_source)
from persodose.mc.engine import (MCProblem, beam_problem, decay_problem, point_source_problem,  # noqa: F401
                                 run_batch)
from persodose.mc.tables import TransportSettings, build_tables  # noqa: F401
