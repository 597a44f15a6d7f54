"""Classical internal-dose methods on grids, and their registry.

Voxel methods (pure functions ``method(tia, *, nuclide, density, kernels, settings) -> Grid``),
registered by name:

* ``"led"``: local energy deposition (:mod:`persodose.dose.led`);
* ``"ssv"``: single soft-tissue voxel S-value convolution (:mod:`persodose.dose.svalue`);
* ``"dsv"``: density-scaled SSV (:mod:`persodose.dose.density_scaling`);
* ``"msv"``: multiple voxel S values (:mod:`persodose.dose.msv`);
* ``"mc"``: Monte Carlo transport on the patient's density and materials (:mod:`persodose.dose.monte_carlo`).

Each registers its own settings dataclass; :func:`get_spec` gives a method's
:class:`MethodSpec`. Plug-ins register more (:mod:`persodose.plugins`).

Organ-level MIRD self-dose with sphere photon absorbed fractions: :mod:`persodose.dose.organ_mird`.
Kernels: :mod:`persodose.dose.kernels`; FFT convolution: :mod:`persodose.dose.convolution`.
"""

from persodose.dose.registry import (ActivityInAirWarning, DoseInputs, MethodOutput, MethodSpec, available_methods,
                                     get_method, get_spec, register_method)
from persodose.dose.kernels import KernelSet, VoxelKernel, read_octant_table, write_octant_table
from persodose.dose.convolution import fft_convolve, fft_convolve_many
from persodose.dose.led import LEDSettings, led_dose
from persodose.dose.svalue import SSVSettings, ssv_dose
from persodose.dose.density_scaling import DSVSettings, dsv_dose
from persodose.dose.msv import MSVSettings, msv_dose
from persodose.dose.monte_carlo import MCMethodSettings, mc_dose
from persodose.dose.organ_mird import OrganDose, organ_doses, sphere_self_dose

__all__ = [
    "ActivityInAirWarning",
    "DoseInputs",
    "MethodOutput",
    "MethodSpec",
    "get_spec",
    "LEDSettings",
    "SSVSettings",
    "DSVSettings",
    "MSVSettings",
    "MCMethodSettings",
    "available_methods",
    "get_method",
    "register_method",
    "KernelSet",
    "VoxelKernel",
    "read_octant_table",
    "write_octant_table",
    "fft_convolve",
    "fft_convolve_many",
    "led_dose",
    "ssv_dose",
    "dsv_dose",
    "msv_dose",
    "mc_dose",
    "OrganDose",
    "organ_doses",
    "sphere_self_dose",
]
