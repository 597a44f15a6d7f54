"""persodose: personalised patient dosimetry for nuclear medicine and CT.

Internal units everywhere: mm, MeV, Bq, s, Gy, g/cm3. Arrays are indexed (z, y, x).
"""

__version__ = "0.1.0"

from persodose.errors import PersodoseError, InputError  # noqa: E402,F401
from persodose.grid import Grid, Kind  # noqa: E402,F401
