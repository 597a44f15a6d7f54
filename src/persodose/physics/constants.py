"""Physical constants used across persodose, in the package's units.

CODATA 2018 recommended values (E. Tiesinga et al., Rev. Mod. Phys. 93 (2021) 025010);
the SI 2019 defining constants (Avogadro, elementary charge) are exact.
"""

#: Electron rest energy m_e c^2, MeV.
ELECTRON_MASS_MEV = 0.51099895
#: Classical electron radius, cm.
R_E_CM = 2.8179403262e-13
#: Fine-structure constant.
ALPHA = 7.2973525693e-3
#: Avogadro constant, 1/mol (exact).
AVOGADRO_PER_MOL = 6.02214076e23
#: Reduced Planck constant times c, MeV cm.
HBARC_MEV_CM = 1.973269804e-11
#: Planck constant times c, keV Angstrom (photon wavelength lambda = hc / E).
HC_KEV_ANGSTROM = 12.398419843
#: Bohr radius, cm.
BOHR_RADIUS_CM = 5.29177210903e-9
#: 1 MeV in joules (exact: e = 1.602176634e-19 C).
MEV_TO_J = 1.602176634e-13
