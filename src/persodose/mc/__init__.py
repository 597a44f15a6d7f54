"""The persodose Monte Carlo engine (coupled photon, electron and positron transport).

Public API::

    from persodose.mc import VoxelPhantom, MCSettings, simulate_decays, simulate_point_source

See :mod:`persodose.mc.transport` for the physics and :mod:`persodose.mc.engine` for runs,
batches and uncertainties.
"""

from persodose.mc.engine import (MCResult, MCSettings, Tally, VoxelPhantom, simulate_decays,  # noqa: F401
                                 simulate_point_source)
from persodose.mc.engine import MCProblem, decay_problem, point_source_problem, run_batch  # noqa: F401
from persodose.mc.tables import TransportSettings, build_tables  # noqa: F401
