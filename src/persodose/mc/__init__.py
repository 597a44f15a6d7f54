"""The persodose Monte Carlo engine (coupled photon, electron and positron transport).

Public API::

    from persodose.mc import VoxelPhantom, MCSettings, simulate_decays, simulate_point_source, simulate_beam

``MCSettings(backend="cuda")`` runs the same physics on an NVIDIA GPU (:mod:`persodose.mc.gpu`).

See :mod:`persodose.mc.transport` for the physics, :mod:`persodose.mc.engine` for runs,
batches and uncertainties (and the modules they live in), and :mod:`persodose.mc.version`
for the version of the physics that keys cached results (:data:`PHYSICS_VERSION`).
"""

from persodose.mc import engine  # noqa: F401
from persodose.mc.phantom import VoxelPhantom  # noqa: F401
from persodose.mc.problem import MCProblem, beam_problem, decay_problem, point_source_problem  # noqa: F401
from persodose.mc.run import run_batch, run_batches, simulate_beam, simulate_decays, simulate_point_source  # noqa: F401
from persodose.mc.settings import MCSettings  # noqa: F401
from persodose.mc.tables import TransportSettings, build_tables  # noqa: F401
from persodose.mc.tally import MCResult, Tally  # noqa: F401
from persodose.mc.version import PHYSICS_VERSION, physics_tag  # noqa: F401
