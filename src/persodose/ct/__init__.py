"""CT scanner and acquisition model: the x-ray source of CT Monte Carlo dosimetry.

* :mod:`persodose.ct.spectrum`: tube spectra (SpekPy v2).
* :mod:`persodose.ct.bowtie`: bowtie filters (parametric generic filters, user tables).
* :mod:`persodose.ct.scanner`: scanner geometry presets.
* :mod:`persodose.ct.acquisition`: acquisition parameters from DICOM headers and overrides.
* :mod:`persodose.ct.trajectory`: focal-spot positions (helical, axial) and beam sampling.
* :mod:`persodose.ct.protocol`: head or body and the CTDI phantom (headers, else the image),
  water-equivalent diameter and SSDE (AAPM Reports 220 and 204).

SpekPy is needed for spectra (``pip install spekpy``), xraylib for the bowtie attenuation.
"""

from persodose.ct.acquisition import (Acquisition, CTAcquisitionWarning, acquisition_from_dicom,
                                      bowtie_for_filter_type)
from persodose.ct.bowtie import (BowtieFilter, bowtie_from_table, generic_bowtie, load_bowtie_csv)
from persodose.ct.scanner import (SCANNERS, Scanner, filtration_for_hvl, get_scanner, guess_scanner,
                                  scanner_names)
from persodose.ct.spectrum import Spectrum, tube_spectrum
from persodose.ct.trajectory import SourcePositions, axial_positions, helical_positions

__all__ = ["Acquisition", "CTAcquisitionWarning", "acquisition_from_dicom", "bowtie_for_filter_type",
           "BowtieFilter", "bowtie_from_table", "generic_bowtie", "load_bowtie_csv", "SCANNERS", "Scanner",
           "filtration_for_hvl", "get_scanner", "guess_scanner", "scanner_names", "Spectrum", "tube_spectrum",
           "SourcePositions", "axial_positions", "helical_positions"]
