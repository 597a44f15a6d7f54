"""Coupled photon-electron-positron transport in a voxel grid (Numba kernels).

The physics, in the spirit of DPM (J. Sempau, S. J. Wilderman, A. F. Bielajew, Phys. Med.
Biol. 45 (2000) 2263):

Photons (Woodcock / delta tracking, E. R. Woodcock et al., ANL-7050 (1965)):
  * photoelectric absorption: the photoelectron takes the whole photon energy (binding
    energy and fluorescence are deposited at the same point, a sub-voxel approximation)
    and leaves isotropically;
  * incoherent scattering: Klein-Nishina sampled with the Butcher-Messel method
    (J. C. Butcher, H. Messel, Nucl. Phys. 20 (1960) 15) and rejected with the material's
    incoherent scattering function S(x)/Z (binding correction, Hubbell et al. 1975); the
    Compton electron's direction follows from momentum conservation;
  * coherent scattering: x^2 sampled from the cumulative of the squared form factor and
    rejected with (1 + cos^2)/2 (PENELOPE 2018 manual, section 2.1);
  * pair production above 2 m c^2: electron and positron share the kinetic energy
    uniformly and keep the photon direction (pair production is < 1 % of mu below 3 MeV).

Electrons and positrons (class II condensed history, M. J. Berger, Methods Comput. Phys.
1 (1963) 135):
  * continuous slowing down with the restricted stopping power (collision losses below
    the hard-collision cut and bremsstrahlung below the photon cut);
  * explicit hard collisions: Moller (e-) or Bhabha (e+) sampled by rejection from the
    1/W^2 envelope, kinematics of free-electron scattering;
  * explicit hard bremsstrahlung with the complete-screening Bethe-Heitler spectral shape
    (k dsigma/dk ~ 4/3 - 4/3 y + y^2); the photon leaves at the angle of an isotropic
    dipole boosted to the electron's speed (an approximation adequate at mm scale);
  * multiple elastic scattering: exact Lewis moments <P1>, <P2> of the screened
    Rutherford cross section over the step, sampled from the two-uniform artificial
    distribution of PENELOPE (Baro et al., NIM B 100 (1995) 31) at a random hinge point
    along the step (Kawrakow & Bielajew, NIM B 134 (1998) 325), which reproduces the
    spatial moments to second order in the step length;
  * steps end at voxel boundaries (exact boundary crossing), at hard events, after losing
    ``max_eloss_fraction`` of the energy or ``max_step_lambda1`` transport mean free paths;
  * below the absorption energy, or when the CSDA range cannot reach the nearest voxel
    face (range rejection), the energy is deposited where the particle is;
  * positrons annihilate at rest into two back-to-back 511 keV photons.

All kernels use the generator of :mod:`persodose.mc.rng` on a per-chunk state, so a run
is reproducible from its seed.

One description, two targets. Every physics function below (samplers, rotation, photon and
charged-particle transport, the stack, and the per-chunk history loops :func:`decay_chunk` and
:func:`particle_chunk`) is plain Python registered with :func:`_physics`: it is compiled here
for the CPU with ``numba.njit(cache=True)`` and :mod:`persodose.mc.gpu` compiles the very same
Python source for CUDA (``numba.cuda.jit(device=True)``). The functions reach the target
through three things only:

* the tally primitive :func:`deposit` (CPU: a plain add into the calling thread's own row of
  ``edep``; GPU: ``cuda.atomic.add`` into one shared tally);
* the random generator state ``rng`` (a 2-word uint64 array owned by the caller);
* the per-thread arrays ``ctr`` (energy counters) and ``stk`` (the particle stack), which are
  private to one work unit on both targets.

What differs between the targets lives in the drivers: :func:`run_decays` and
:func:`run_particles` here (``prange`` over chunks, per-thread rows) and the CUDA kernels of
:mod:`persodose.mc.gpu` (one CUDA thread per chunk). A chunk consumes its random stream
``(seed, stream0 + chunk)`` identically on both targets.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from persodose.mc.rng import seed_state, uniform

from persodose.physics.constants import ELECTRON_MASS_MEV as MC2  # noqa: E402  (electron rest energy, MeV)
from persodose.physics.constants import HC_KEV_ANGSTROM as HC_KEV_A  # noqa: E402  (hc, keV Angstrom)

# particle types on the stack
PHOTON, ELECTRON, POSITRON = 0, 1, 2
# counters (per thread)
C_EMITTED, C_DEPOSITED, C_ESCAPED, C_ANNIHILATION, C_BELOW_CUT, C_OVERFLOW, C_STEPS, C_UNCOLLIDED = 0, 1, 2, 3, 4, 5, 6, 7
C_N = 8
STACK_SIZE = 512

#: The target-independent physics functions (njit dispatchers), in definition order;
#: :mod:`persodose.mc.gpu` compiles their ``py_func`` for CUDA.
PHYSICS_FUNCTIONS: list = []


def _physics(inline: bool = False):
    """Compile a physics function for the CPU and register it for the other targets.

    ``inline=True`` inlines it at Numba IR level on the CPU (small hot helpers), as before.
    """

    def wrap(fn):
        disp = njit(inline="always", cache=True)(fn) if inline else njit(cache=True)(fn)
        PHYSICS_FUNCTIONS.append(disp)
        return disp

    return wrap


@njit(inline="always", cache=True)
def deposit(edep, vox, de):
    """Tally primitive, CPU version: ``edep`` is the calling thread's own row (no race).

    :mod:`persodose.mc.gpu` replaces it with an atomic add into one shared tally.
    """
    edep[vox] += de


@_physics(inline=True)
def _fmax(a, b):
    """``max(a, b)``: the builtin ``max``/``min`` do not compile for numba 0.68's CUDA target."""
    return a if a >= b else b


@_physics(inline=True)
def _fmin(a, b):
    """``min(a, b)`` (see :func:`_fmax`)."""
    return a if a <= b else b


@_physics(inline=True)
def _eidx(e, log_emin, inv_dlog, n):
    f = (math.log(e) - log_emin) * inv_dlog
    if f < 0.0:
        f = 0.0
    top = n - 1.000001
    if f > top:
        f = top
    i = int(f)
    return i, f - i


@_physics(inline=True)
def _lerp(row, i, fr):
    return row[i] + (row[i + 1] - row[i]) * fr


@_physics(inline=True)
def _search(arr, value):
    """Largest j with arr[j] <= value (arr increasing), clipped to [0, len-2]."""
    lo = 0
    hi = arr.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if arr[mid] <= value:
            lo = mid
        else:
            hi = mid
    return lo


@_physics(inline=True)
def _isotropic(rng):
    w = 2.0 * uniform(rng) - 1.0
    phi = 2.0 * math.pi * uniform(rng)
    s = math.sqrt(_fmax(0.0, 1.0 - w * w))
    return s * math.cos(phi), s * math.sin(phi), w


@_physics(inline=True)
def _rotate(u, v, w, cos_t, phi):
    """Direction after a deflection of polar cosine cos_t and azimuth phi."""
    sin_t = math.sqrt(_fmax(0.0, 1.0 - cos_t * cos_t))
    cp = math.cos(phi)
    sp = math.sin(phi)
    if abs(w) > 0.99999999:
        un = sin_t * cp
        vn = sin_t * sp
        wn = cos_t if w > 0 else -cos_t
    else:
        tmp = math.sqrt(1.0 - w * w)
        un = u * cos_t + sin_t * (u * w * cp - v * sp) / tmp
        vn = v * cos_t + sin_t * (v * w * cp + u * sp) / tmp
        wn = w * cos_t - tmp * sin_t * cp
    norm = 1.0 / math.sqrt(un * un + vn * vn + wn * wn)
    return un * norm, vn * norm, wn * norm


@_physics(inline=True)
def _push(stk, sp, kind, e, x, y, z, u, v, w, ctr, edep, vox):
    if sp >= stk.shape[0]:
        # Stack full (never seen in practice): deposit locally and count it.
        deposit(edep, vox, e)
        ctr[C_DEPOSITED] += e
        ctr[C_OVERFLOW] += e
        return sp
    stk[sp, 0] = kind
    stk[sp, 1] = e
    stk[sp, 2] = x
    stk[sp, 3] = y
    stk[sp, 4] = z
    stk[sp, 5] = u
    stk[sp, 6] = v
    stk[sp, 7] = w
    return sp + 1


@_physics()
def _voxel_of(x, y, z, nz, ny, nx, sz, sy, sx):
    ix = int(math.floor(x / sx))
    iy = int(math.floor(y / sy))
    iz = int(math.floor(z / sz))
    if ix < 0 or iy < 0 or iz < 0 or ix >= nx or iy >= ny or iz >= nz:
        return -1
    return (iz * ny + iy) * nx + ix


# ----------------------------------------------------------------------------- photons
@_physics()
def _sample_compton(e, m, compton_sf, x_nodes, rng):
    """Returns (epsilon = E'/E, 1 - cos theta) from Klein-Nishina x S(x)/Z."""
    k = e / MC2
    eps0 = 1.0 / (1.0 + 2.0 * k)
    a1 = -math.log(eps0)
    a2 = 0.5 * (1.0 - eps0 * eps0)
    e_kev = e * 1000.0
    while True:
        if uniform(rng) * (a1 + a2) < a1:
            eps = math.exp(-a1 * uniform(rng))
        else:
            eps = math.sqrt(eps0 * eps0 + (1.0 - eps0 * eps0) * uniform(rng))
        onecost = (1.0 - eps) / (k * eps)
        sin2 = onecost * (2.0 - onecost)
        g = 1.0 - eps * sin2 / (1.0 + eps * eps)
        if uniform(rng) > g:
            continue
        xq = e_kev * math.sqrt(0.5 * onecost) / HC_KEV_A
        if xq >= x_nodes[x_nodes.shape[0] - 1]:
            return eps, onecost
        j = _search(x_nodes, xq)
        f = (xq - x_nodes[j]) / (x_nodes[j + 1] - x_nodes[j])
        s = compton_sf[m, j] + (compton_sf[m, j + 1] - compton_sf[m, j]) * f
        if uniform(rng) < s:
            return eps, onecost


@_physics()
def _sample_rayleigh(e, m, rayleigh_cum, x_nodes, rng):
    """Cosine of the coherent scattering angle."""
    e_kev = e * 1000.0
    xmax = e_kev / HC_KEV_A
    n = x_nodes.shape[0]
    if xmax >= x_nodes[n - 1]:
        cmax = rayleigh_cum[m, n - 1]
    else:
        j = _search(x_nodes, xmax)
        x2a = x_nodes[j] * x_nodes[j]
        x2b = x_nodes[j + 1] * x_nodes[j + 1]
        f = (xmax * xmax - x2a) / (x2b - x2a)
        cmax = rayleigh_cum[m, j] + (rayleigh_cum[m, j + 1] - rayleigh_cum[m, j]) * f
    x2max = xmax * xmax
    for _ in range(1000):
        target = uniform(rng) * cmax
        row = rayleigh_cum[m]
        j = _search(row, target)
        c0 = row[j]
        c1 = row[j + 1]
        x2a = x_nodes[j] * x_nodes[j]
        x2b = x_nodes[j + 1] * x_nodes[j + 1]
        x2 = x2a + (x2b - x2a) * ((target - c0) / (c1 - c0) if c1 > c0 else 0.0)
        cos_t = 1.0 - 2.0 * x2 / x2max
        if cos_t < -1.0:
            cos_t = -1.0
        if uniform(rng) * 2.0 < 1.0 + cos_t * cos_t:
            return cos_t
    return 1.0


@_physics(inline=True)
def _tle_voxel(photon, m, rho, i, fr, tle_range_mm):
    """True when the track-length estimator scores in a voxel of material ``m`` and density ``rho``.

    The CSDA range of the photon's most energetic secondary electron (row 5 of the photon
    table, g/cm2) must be at most ``tle_range_mm`` in this voxel.
    """
    # written as the walk of _tle_score writes it (rho >= rho_min), so the two agree to the bit
    return rho >= _lerp(photon[m, 5], i, fr) * 10.0 / tle_range_mm


@_physics(inline=True)
def _in_tle_box(ix, iy, iz, box):
    """True when voxel (ix, iy, iz) is inside the estimator's box ``box[8:14]`` (half-open index ranges)."""
    return box[8] <= ix < box[9] and box[10] <= iy < box[11] and box[12] <= iz < box[13]


@_physics(inline=True)
def _dda_axis(p, d, i, size):
    """One axis of the voxel walk: ``(t of the next face crossing, t between crossings, index step)``."""
    if d > 0.0:
        return ((i + 1) * size - p) / d, size / d, 1
    if d < 0.0:
        return (i * size - p) / d, -size / d, -1
    return 1e30, 1e30, 0


@_physics()
def _tle_score(e, x, y, z, u, v, w, s, dens, mat, nz, ny, nx, sz, sy, sx, photon, i, fr, tle_range_mm, box, edep):
    """Score the track length of a flight of ``s`` mm from (x, y, z) along (u, v, w).

    Each voxel crossed where the estimator applies (:func:`_tle_voxel`, inside the box of
    :func:`_in_tle_box`) receives ``e x (mu_tle/rho) x rho x length``: the expected energy the
    photon gives to local electrons on that piece of path (J. F. Williamson, Med. Phys. 14
    (1987) 567). The flight is first clipped to the box (slab method), then walked voxel by
    voxel with the incremental traversal of J. Amanatides, A. Woo (Eurographics 1987): one
    division per axis per flight, none per voxel.
    """
    # the box, clipped to the grid (an unbounded box is the whole grid)
    bx0 = int(box[8])
    bx1 = int(_fmin(box[9], nx))
    by0 = int(box[10])
    by1 = int(_fmin(box[11], ny))
    bz0 = int(box[12])
    bz1 = int(_fmin(box[13], nz))
    t0 = 0.0
    t1 = s
    for a in range(3):
        if a == 0:
            o, d, lo, hi = x, u, bx0 * sx, bx1 * sx
        elif a == 1:
            o, d, lo, hi = y, v, by0 * sy, by1 * sy
        else:
            o, d, lo, hi = z, w, bz0 * sz, bz1 * sz
        if d == 0.0:
            if o < lo or o > hi:
                return
        else:
            ta = (lo - o) / d
            tb = (hi - o) / d
            t0 = _fmax(t0, _fmin(ta, tb))
            t1 = _fmin(t1, _fmax(ta, tb))
    if t1 <= t0:
        return
    # start a little inside the box, and in the voxel the flight is in there
    tm = t0 + 1e-9 * (t1 - t0)
    ix = int(math.floor((x + tm * u) / sx))
    iy = int(math.floor((y + tm * v) / sy))
    iz = int(math.floor((z + tm * w) / sz))
    # next face crossings (absolute t along the flight), the spacing between them, the step
    tnx, dtx, stx = _dda_axis(x, u, ix, sx)
    tny, dty, sty = _dda_axis(y, v, iy, sy)
    tnz, dtz, stz = _dda_axis(z, w, iz, sz)
    t = t0
    m_prev = -1
    coef = 0.0  # e x mu_tle/rho x 0.1 of the last material (MeV cm2/g per mm)
    rho_min = 0.0  # the density above which that material qualifies (the rule of _tle_voxel)
    while bx0 <= ix < bx1 and by0 <= iy < by1 and bz0 <= iz < bz1:
        tn = _fmin(_fmin(tnx, tny), tnz)
        seg = _fmin(tn, t1) - t
        if seg > 0.0:
            vox = (iz * ny + iy) * nx + ix
            m = mat[vox]
            if m != m_prev:  # rays cross long runs of one material: look its values up once
                m_prev = m
                coef = e * _lerp(photon[m, 4], i, fr) * 0.1
                rho_min = _lerp(photon[m, 5], i, fr) * 10.0 / tle_range_mm
            rho = dens[vox]
            if rho > 0.0 and rho >= rho_min:
                deposit(edep, vox, coef * rho * seg)
        if tn >= t1:
            return
        t = tn
        if tnx <= tny and tnx <= tnz:
            ix += stx
            tnx += dtx
        elif tny <= tnz:
            iy += sty
            tny += dty
        else:
            iz += stz
            tnz += dtz


@_physics()
def transport_photon(e, x, y, z, u, v, w, dens, mat, nz, ny, nx, sz, sy, sx,
                     log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes,
                     photon_cut, tle_range_mm, settings_f, edep, ctr, stk, sp, rng):
    """Transport one photon until it is absorbed, falls below the cut or escapes.

    ``tle_range_mm`` > 0 switches on the track-length estimator below 2 m c^2: in voxels
    where :func:`_tle_voxel` holds, energy is scored along the path by :func:`_tle_score`
    and the electrons the photon sets in motion there are not transported (their energy is
    booked as deposited, so the energy counters still balance exactly; the voxel tally is
    the estimator's). Elsewhere, and for ``tle_range_mm`` <= 0, the transport is analog.
    """
    collided = False
    # the straight piece of track not yet scored: from (qx, qy, qz), plen mm long (the
    # estimator walks it once, at the next real interaction or on escape, not at every
    # fictitious interaction of the delta tracking)
    qx = x
    qy = y
    qz = z
    plen = 0.0
    while True:
        if e < photon_cut:
            vox = _voxel_of(x, y, z, nz, ny, nx, sz, sy, sx)
            if vox >= 0:
                deposit(edep, vox, e)
                ctr[C_DEPOSITED] += e
                ctr[C_BELOW_CUT] += e
            else:
                ctr[C_ESCAPED] += e
            return sp
        i, fr = _eidx(e, log_emin, inv_dlog, n_e)
        mumax = majorant[i]
        s = -math.log(uniform(rng)) / mumax
        tle = tle_range_mm > 0.0 and e < 2.0 * MC2
        plen += s
        x += s * u
        y += s * v
        z += s * w
        vox = _voxel_of(x, y, z, nz, ny, nx, sz, sy, sx)
        if vox < 0:
            if tle:
                _tle_score(e, qx, qy, qz, u, v, w, plen, dens, mat, nz, ny, nx, sz, sy, sx, photon, i, fr,
                           tle_range_mm, settings_f, edep)
            ctr[C_ESCAPED] += e
            if not collided:
                ctr[C_UNCOLLIDED] += e
            return sp
        m = mat[vox]
        rho01 = dens[vox] * 0.1
        mu_ph = _lerp(photon[m, 0], i, fr) * rho01
        mu_co = _lerp(photon[m, 1], i, fr) * rho01
        mu_ra = _lerp(photon[m, 2], i, fr) * rho01
        mu_pa = _lerp(photon[m, 3], i, fr) * rho01
        r = uniform(rng) * mumax
        if r >= mu_ph + mu_co + mu_ra + mu_pa:
            continue  # fictitious interaction
        collided = True
        if tle:
            _tle_score(e, qx, qy, qz, u, v, w, plen, dens, mat, nz, ny, nx, sz, sy, sx, photon, i, fr,
                       tle_range_mm, settings_f, edep)
        qx = x
        qy = y
        qz = z
        plen = 0.0
        # electrons set in motion here are scored by the estimator, not transported
        local = (tle and _in_tle_box(int(math.floor(x / sx)), int(math.floor(y / sy)), int(math.floor(z / sz)),
                                     settings_f) and _tle_voxel(photon, m, dens[vox], i, fr, tle_range_mm))
        if r < mu_ph:
            if local:
                ctr[C_DEPOSITED] += e
                return sp
            eu, ev, ew = _isotropic(rng)
            sp = _push(stk, sp, ELECTRON, e, x, y, z, eu, ev, ew, ctr, edep, vox)
            return sp
        if r < mu_ph + mu_co:
            eps, onecost = _sample_compton(e, m, compton_sf, x_nodes, rng)
            e_new = eps * e
            phi = 2.0 * math.pi * uniform(rng)
            nu, nv, nw = _rotate(u, v, w, 1.0 - onecost, phi)
            te = e - e_new
            # electron momentum = incoming photon momentum - outgoing photon momentum
            px = e * u - e_new * nu
            py = e * v - e_new * nv
            pz = e * w - e_new * nw
            pn = math.sqrt(px * px + py * py + pz * pz)
            if local:
                ctr[C_DEPOSITED] += te
            elif pn > 0.0 and te > 0.0:
                sp = _push(stk, sp, ELECTRON, te, x, y, z, px / pn, py / pn, pz / pn, ctr, edep, vox)
            e = e_new
            u, v, w = nu, nv, nw
            continue
        if r < mu_ph + mu_co + mu_ra:
            cos_t = _sample_rayleigh(e, m, rayleigh_cum, x_nodes, rng)
            u, v, w = _rotate(u, v, w, cos_t, 2.0 * math.pi * uniform(rng))
            continue
        # pair production
        t_kin = e - 2.0 * MC2
        f = uniform(rng)
        sp = _push(stk, sp, ELECTRON, f * t_kin, x, y, z, u, v, w, ctr, edep, vox)
        sp = _push(stk, sp, POSITRON, (1.0 - f) * t_kin, x, y, z, u, v, w, ctr, edep, vox)
        # the rest energy of the pair reappears as annihilation photons
        ctr[C_ANNIHILATION] -= 2.0 * MC2
        return sp


# ----------------------------------------------------------------------------- electrons
@_physics()
def _sample_moller_fraction(t, xmin, rng):
    """Energy fraction x = W/T of the delta ray, in [xmin, 1/2] (Moller, e-)."""
    xmax = 0.5
    gam = t / MC2 + 1.0
    gg = (2.0 * gam - 1.0) / (gam * gam)
    while True:
        q = uniform(rng)
        x = xmin * xmax / (xmin * (1.0 - q) + xmax * q)  # density ~ 1/x^2
        y = 1.0 - x
        f = 1.0 - gg * x + x * x * (1.0 - gg + (1.0 - gg * y) / (y * y))
        if uniform(rng) * 2.25 <= f:
            return x


@_physics()
def _sample_bhabha_fraction(t, xmin, rng):
    """Energy fraction x = W/T given to the atomic electron, in [xmin, 1] (Bhabha, e+)."""
    gam = t / MC2 + 1.0
    beta2 = 1.0 - 1.0 / (gam * gam)
    yy = 1.0 / (1.0 + gam)
    y2 = yy * yy
    y12 = 1.0 - 2.0 * yy
    b1 = 2.0 - y2
    b2 = y12 * (3.0 + y2)
    y122 = y12 * y12
    b4 = y122 * y12
    b3 = b4 + y122
    while True:
        q = uniform(rng)
        x = xmin / (1.0 - q * (1.0 - xmin))  # density ~ 1/x^2 on [xmin, 1]
        # Bhabha bracket 1 - beta^2 x (B1 - x (B2 - x (B3 - x B4))) lies in [0, 1] on [0, 1]
        f = 1.0 - beta2 * x * (b1 - x * (b2 - x * (b3 - x * b4)))
        if uniform(rng) <= f:
            return x


@_physics()
def _sample_brems_fraction(yc, rng):
    """Photon energy fraction y = k/T in [yc, 1], k dsigma/dk ~ 4/3 - 4/3 y + y^2."""
    while True:
        y = yc ** (1.0 - uniform(rng))
        if uniform(rng) * (4.0 / 3.0) <= 4.0 / 3.0 - 4.0 / 3.0 * y + y * y:
            return y


@_physics(inline=True)
def _ms_cosine(g1, g2, rng):
    """Deflection cosine with the Lewis moments exp(-g1), exp(-g2) (two-uniform model)."""
    mu1 = math.exp(-g1)
    mu2 = (2.0 * math.exp(-g2) + 1.0) / 3.0
    m1 = 0.5 * (1.0 - mu1)
    m2 = 0.25 * (1.0 - 2.0 * mu1 + mu2)
    if m1 > 0.4999:
        return 2.0 * uniform(rng) - 1.0
    b = (2.0 * m1 - 3.0 * m2) / (1.0 - 2.0 * m1)
    if b < 0.0:
        b = 0.0
    if b > 1.0:
        b = 1.0
    a = 1.0 - 2.0 * m1 + b
    if uniform(rng) < a:
        uu = b * uniform(rng)
    else:
        uu = b + (1.0 - b) * uniform(rng)
    return 1.0 - 2.0 * uu


@_physics(inline=True)
def _dist_to_face(x, y, z, u, v, w, ix, iy, iz, sz, sy, sx):
    """Distance along (u,v,w) to the voxel's boundary and the axis crossed (0 x, 1 y, 2 z)."""
    big = 1e30
    tx = big
    ty = big
    tz = big
    if u > 0.0:
        tx = ((ix + 1) * sx - x) / u
    elif u < 0.0:
        tx = (ix * sx - x) / u
    if v > 0.0:
        ty = ((iy + 1) * sy - y) / v
    elif v < 0.0:
        ty = (iy * sy - y) / v
    if w > 0.0:
        tz = ((iz + 1) * sz - z) / w
    elif w < 0.0:
        tz = (iz * sz - z) / w
    if tx <= ty and tx <= tz:
        return _fmax(tx, 0.0), 0
    if ty <= tz:
        return _fmax(ty, 0.0), 1
    return _fmax(tz, 0.0), 2


@_physics(inline=True)
def _range_rejected(x, y, z, ix, iy, iz, sz, sy, sx, rho, electron, p, m, i, fr):
    """True when the CSDA range cannot reach the nearest face of voxel (ix, iy, iz) (range rejection)."""
    r_mm = _lerp(electron[p, m, 3], i, fr) / rho * 10.0
    dmin = _fmin(_fmin(_fmin(x - ix * sx, (ix + 1) * sx - x), _fmin(y - iy * sy, (iy + 1) * sy - y)),
                 _fmin(z - iz * sz, (iz + 1) * sz - z))
    return r_mm < dmin


@_physics()
def _absorb_charged(positron, e, x, y, z, vox, edep, ctr, stk, sp, rng):
    """Deposit a stopped electron or positron in its voxel; a positron annihilates at rest into
    two back-to-back 511 keV photons. Returns the stack pointer."""
    deposit(edep, vox, e)
    ctr[C_DEPOSITED] += e
    ctr[C_BELOW_CUT] += e
    if positron:
        a_u, a_v, a_w = _isotropic(rng)
        sp = _push(stk, sp, PHOTON, MC2, x, y, z, a_u, a_v, a_w, ctr, edep, vox)
        sp = _push(stk, sp, PHOTON, MC2, x, y, z, -a_u, -a_v, -a_w, ctr, edep, vox)
        ctr[C_ANNIHILATION] += 2.0 * MC2
    return sp


@_physics(inline=True)
def _charged_step(positron, e, electron, p, m, rho01, i, fr, wcc, kc, f_eloss, f_lambda1,
                  log_emin, inv_dlog, n_e, rng):
    """Length of the next condensed-history step and the cross sections along it.

    The step ends at the sampled hard event, after losing ``f_eloss`` of the energy or after
    ``f_lambda1`` transport mean free paths. Returns ``(stop, sig_c, sig_h, s, hard, tr1, tr2)``:
    the restricted stopping power (MeV/mm), the hard-collision and total hard cross sections
    (1/mm), the step (mm), whether it ends at the hard event, and the transport cross sections
    at the step's mid-energy.
    """
    stop = _lerp(electron[p, m, 0], i, fr) * rho01  # MeV/mm
    sig_c = _lerp(electron[p, m, 1], i, fr) * rho01  # 1/mm
    sig_b = _lerp(electron[p, m, 2], i, fr) * rho01
    tr1 = _lerp(electron[p, m, 4], i, fr) * rho01
    # hard collisions only possible above 2 wcc (e-) or wcc (e+); brems above kc
    if (not positron and e <= 2.0 * wcc) or (positron and e <= wcc):
        sig_c = 0.0
    if e <= kc:
        sig_b = 0.0
    sig_h = sig_c + sig_b
    s_hard = -math.log(uniform(rng)) / sig_h if sig_h > 0.0 else 1e30
    s = _fmin(_fmin(s_hard, f_eloss * e / stop), f_lambda1 / tr1)
    # Midpoint rule: stopping power and transport cross sections at the step's mid-energy
    # (second order in the step). Start-of-step values made paths 2-4 % too long in water
    # at max_eloss_fraction = 0.08 (docs/validation_electrons.md).
    e_mid = _fmax(e - 0.5 * stop * s, 0.5 * e)
    im, frm = _eidx(_fmax(e_mid, 1e-3), log_emin, inv_dlog, n_e)
    tr1 = _lerp(electron[p, m, 4], im, frm) * rho01
    tr2 = _lerp(electron[p, m, 5], im, frm) * rho01
    return stop, sig_c, sig_h, s, s_hard <= s, tr1, tr2


@_physics(inline=True)
def _hinge_step(s, tr1, tr2, x, y, z, u, v, w, ix, iy, iz, sz, sy, sx, rng):
    """Move along a step of length s with one multiple-scattering deflection at a random hinge
    point, stopping at the face of voxel (ix, iy, iz) if the path reaches it.

    Returns ``(x, y, z, u, v, w, travelled, crossed, axis)``: the new position and direction,
    the path length, whether the face on ``axis`` (0 x, 1 y, 2 z) was reached.
    """
    s1 = uniform(rng) * s
    tb, axis = _dist_to_face(x, y, z, u, v, w, ix, iy, iz, sz, sy, sx)
    crossed = False
    travelled = 0.0
    if s1 >= tb:
        travelled = tb
        crossed = True
    else:
        travelled = s1
        x += s1 * u
        y += s1 * v
        z += s1 * w
        cos_t = _ms_cosine(s * tr1, s * tr2, rng)
        u, v, w = _rotate(u, v, w, cos_t, 2.0 * math.pi * uniform(rng))
        s2 = s - s1
        tb, axis = _dist_to_face(x, y, z, u, v, w, ix, iy, iz, sz, sy, sx)
        if s2 >= tb:
            travelled += tb
            crossed = True
        else:
            travelled += s2
            x += s2 * u
            y += s2 * v
            z += s2 * w
    if crossed:
        x += tb * u
        y += tb * v
        z += tb * w
    return x, y, z, u, v, w, travelled, crossed, axis


@_physics(inline=True)
def _continuous_loss(e, travelled, stop, electron, p, m, rho01, log_emin, inv_dlog, n_e):
    """Energy lost over a path ``travelled`` (stopping power at the mid-energy), at most e."""
    e_mid = _fmax(e - 0.5 * stop * travelled, 0.5 * e)
    im, frm = _eidx(_fmax(e_mid, 1e-3), log_emin, inv_dlog, n_e)
    de = _lerp(electron[p, m, 0], im, frm) * rho01 * travelled
    if de > e:
        de = e
    return de


@_physics(inline=True)
def _cross_face(axis, x, y, z, u, v, w, ix, iy, iz, sz, sy, sx):
    """Enter the neighbour voxel across the face on ``axis``, the position snapped onto the face.

    Returns ``(x, y, z, ix, iy, iz)``.
    """
    if axis == 0:
        ix += 1 if u > 0.0 else -1
        x = ix * sx if u > 0.0 else (ix + 1) * sx
    elif axis == 1:
        iy += 1 if v > 0.0 else -1
        y = iy * sy if v > 0.0 else (iy + 1) * sy
    else:
        iz += 1 if w > 0.0 else -1
        z = iz * sz if w > 0.0 else (iz + 1) * sz
    return x, y, z, ix, iy, iz


@_physics()
def _delta_ray(positron, e, x, y, z, u, v, w, wcc, vox, edep, ctr, stk, sp, rng):
    """Hard inelastic collision (Moller e-, Bhabha e+): the delta ray goes on the stack.

    Returns ``(e, u, v, w, sp)`` of the primary (unchanged below the kinematic threshold).
    """
    if positron:
        if e <= wcc:
            return e, u, v, w, sp
        xf = _sample_bhabha_fraction(e, wcc / e, rng)
    else:
        if e <= 2.0 * wcc:
            return e, u, v, w, sp
        xf = _sample_moller_fraction(e, wcc / e, rng)
    wd = xf * e
    tp = e - wd
    cos_d = math.sqrt(_fmin(1.0, wd * (e + 2.0 * MC2) / (e * (wd + 2.0 * MC2))))
    cos_p = math.sqrt(_fmin(1.0, tp * (e + 2.0 * MC2) / (e * (tp + 2.0 * MC2))))
    phi = 2.0 * math.pi * uniform(rng)
    du, dv, dw = _rotate(u, v, w, cos_d, phi)
    sp = _push(stk, sp, ELECTRON, wd, x, y, z, du, dv, dw, ctr, edep, vox)
    u, v, w = _rotate(u, v, w, cos_p, phi + math.pi)
    return tp, u, v, w, sp


@_physics()
def _hard_brems(e, x, y, z, u, v, w, kc, vox, edep, ctr, stk, sp, rng):
    """Hard bremsstrahlung: the photon goes on the stack. Returns ``(e, sp)`` of the primary
    (unchanged at or below the photon cut kc)."""
    if e <= kc:
        return e, sp
    yk = _sample_brems_fraction(kc / e, rng)
    k = yk * e
    gam = e / MC2 + 1.0
    beta = math.sqrt(1.0 - 1.0 / (gam * gam))
    c0 = 2.0 * uniform(rng) - 1.0
    cos_k = (c0 + beta) / (1.0 + beta * c0)
    ku, kv, kw = _rotate(u, v, w, cos_k, 2.0 * math.pi * uniform(rng))
    sp = _push(stk, sp, PHOTON, k, x, y, z, ku, kv, kw, ctr, edep, vox)
    return e - k, sp


@_physics()
def transport_charged(positron, e, x, y, z, u, v, w, dens, mat, nz, ny, nx, sz, sy, sx,
                      log_emin, inv_dlog, n_e, electron, electron_cut, wcc, kc,
                      f_eloss, f_lambda1, range_rejection, edep, ctr, stk, sp, rng):
    """Follow one electron (or positron) to absorption or escape; secondaries go on the stack.

    Each step: absorption below the cut or by range rejection, step length and hard-event
    sampling, the hinge step to the voxel face at most, the continuous loss, then either the
    crossing into the next voxel or the hard event. Returns the stack pointer.
    """
    p = 1 if positron else 0
    ix = int(math.floor(x / sx))
    iy = int(math.floor(y / sy))
    iz = int(math.floor(z / sz))
    if ix < 0 or iy < 0 or iz < 0 or ix >= nx or iy >= ny or iz >= nz:
        ctr[C_ESCAPED] += e
        return sp
    vox = (iz * ny + iy) * nx + ix
    while True:
        absorbed = e < electron_cut
        m = mat[vox]
        rho = dens[vox]
        rho01 = rho * 0.1
        i, fr = _eidx(_fmax(e, 1e-3), log_emin, inv_dlog, n_e)
        if not absorbed and range_rejection:
            absorbed = _range_rejected(x, y, z, ix, iy, iz, sz, sy, sx, rho, electron, p, m, i, fr)
        if absorbed:
            return _absorb_charged(positron, e, x, y, z, vox, edep, ctr, stk, sp, rng)
        ctr[C_STEPS] += 1.0
        stop, sig_c, sig_h, s, hard, tr1, tr2 = _charged_step(positron, e, electron, p, m, rho01, i, fr, wcc, kc,
                                                             f_eloss, f_lambda1, log_emin, inv_dlog, n_e, rng)
        x, y, z, u, v, w, travelled, crossed, axis = _hinge_step(s, tr1, tr2, x, y, z, u, v, w, ix, iy, iz,
                                                                 sz, sy, sx, rng)
        de = _continuous_loss(e, travelled, stop, electron, p, m, rho01, log_emin, inv_dlog, n_e)
        deposit(edep, vox, de)
        ctr[C_DEPOSITED] += de
        e -= de
        if crossed:
            x, y, z, ix, iy, iz = _cross_face(axis, x, y, z, u, v, w, ix, iy, iz, sz, sy, sx)
            if ix < 0 or iy < 0 or iz < 0 or ix >= nx or iy >= ny or iz >= nz:
                ctr[C_ESCAPED] += e
                if positron:
                    # annihilation outside the phantom: its photons escape too
                    ctr[C_ANNIHILATION] += 2.0 * MC2
                    ctr[C_ESCAPED] += 2.0 * MC2
                return sp
            vox = (iz * ny + iy) * nx + ix
            continue
        if hard and e > electron_cut:
            if uniform(rng) * sig_h < sig_c:
                e, u, v, w, sp = _delta_ray(positron, e, x, y, z, u, v, w, wcc, vox, edep, ctr, stk, sp, rng)
            else:
                e, sp = _hard_brems(e, x, y, z, u, v, w, kc, vox, edep, ctr, stk, sp, rng)


# ----------------------------------------------------------------------------- histories
@_physics()
def _sample_cdf(cdf_e, cdf, rng):
    r = uniform(rng) * cdf[cdf.shape[0] - 1]
    j = _search(cdf, r)
    c0 = cdf[j]
    c1 = cdf[j + 1]
    f = (r - c0) / (c1 - c0) if c1 > c0 else 0.0
    return cdf_e[j] + (cdf_e[j + 1] - cdf_e[j]) * f


@_physics()
def _process_stack(stk, sp, dens, mat, nz, ny, nx, sz, sy, sx, log_emin, inv_dlog, n_e, photon, majorant,
                   compton_sf, rayleigh_cum, x_nodes, electron, settings_f, range_rejection, edep, ctr, rng):
    photon_cut = settings_f[0]
    electron_cut = settings_f[1]
    wcc = settings_f[2]
    kc = settings_f[3]
    f_eloss = settings_f[4]
    f_lambda1 = settings_f[5]
    # track-length estimator: on when settings_f[6] is 1, where secondary-electron CSDA ranges
    # are at most settings_f[7] of the smallest voxel side, inside the box settings_f[8:14]
    tle_range_mm = settings_f[7] * _fmin(_fmin(sx, sy), sz) if settings_f[6] > 0.5 else -1.0
    while sp > 0:
        sp -= 1
        kind = int(stk[sp, 0])
        e = stk[sp, 1]
        x = stk[sp, 2]
        y = stk[sp, 3]
        z = stk[sp, 4]
        u = stk[sp, 5]
        v = stk[sp, 6]
        w = stk[sp, 7]
        if kind == PHOTON:
            sp = transport_photon(e, x, y, z, u, v, w, dens, mat, nz, ny, nx, sz, sy, sx, log_emin, inv_dlog,
                                  n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, photon_cut,
                                  tle_range_mm, settings_f, edep, ctr, stk, sp, rng)
        else:
            sp = transport_charged(kind == POSITRON, e, x, y, z, u, v, w, dens, mat, nz, ny, nx, sz, sy, sx,
                                   log_emin, inv_dlog, n_e, electron, electron_cut, wcc, kc, f_eloss,
                                   f_lambda1, range_rejection, edep, ctr, stk, sp, rng)
    return sp


@_physics()
def chunk_strata(decays_per_chunk, c):
    """``(first stratum, strata in the batch)`` of chunk ``c``: the chunks hold consecutive strata.

    Summed with plain loops, the same on both targets (a few thousand chunks cost a GPU
    thread microseconds).
    """
    start = 0
    total = 0
    for k in range(decays_per_chunk.shape[0]):
        if k < c:
            start += decays_per_chunk[k]
        total += decays_per_chunk[k]
    return start, total


@_physics()
def decay_chunk(rng, n_decays, stratum0, n_strata, src_index, src_cdf, nz, ny, nx, sz, sy, sx, dens, mat,
                local_mev, beta_yields, beta_minus_e, beta_minus_cdf, beta_plus_e, beta_plus_cdf,
                line_kind, line_e, line_cum, line_total,
                log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                settings_f, range_rejection, edep, ctr, stk):
    """``n_decays`` decays on one random stream ``rng``: the work of one chunk (any target).

    ``edep`` (n_vox,) receives the energy through :func:`deposit`; ``ctr`` (C_N,) and
    ``stk`` (depth, 8) belong to this work unit only.

    With stratified sampling (``settings_f[14]`` = 1) the batch's cumulative activity is cut
    into ``n_strata`` equal strata, one decay in each, and this chunk's decays take the strata
    from ``stratum0`` on: every voxel then receives its expected number of decays to within
    one instead of a multinomial count (stratified sampling, e.g. M. H. Kalos, P. A. Whitlock,
    Monte Carlo Methods, 2nd ed., Wiley 2008, section 4.3). Each batch stays an independent
    replicate, so the batch method still estimates the uncertainty.

    With the control variate (``settings_f[15]`` = 1), for a decay in a voxel of density at
    least ``settings_f[16]`` and of at least ``settings_f[17]`` of the activity, nothing is tallied for the energy it leaves in place
    (``local_mev``), and the kinetic energy of every electron and positron it emits is taken
    back from its birth voxel (a negative deposit) while the particle itself is transported as
    always. The caller adds the expectation of the two, spread over those voxels by their
    activity, with no noise (:meth:`persodose.mc.problem.MCProblem.control_part`). The mean is
    unchanged (the emitted energies do not depend on where the decay is); what is left to the
    sampling is what the charged particles carry out of their voxel and the photons' energy,
    not the spread of the beta spectrum nor how many decays a voxel happened to get (control
    variates: M. H. Kalos, P. A. Whitlock, Monte Carlo Methods, 2nd ed., Wiley 2008, chapter 4).
    The emitted and deposited counters take the same energies back and get the same expectation,
    so the voxel tally still sums to the deposited energy and the balance stays exact.

    When ``edep`` is twice the grid (``2 n_vox``), what the control takes back from voxel ``v``
    (the energy left in place and the charged particles' kinetic energy) is also added, with
    the opposite sign, to ``edep[n_vox + v]``: the second tally from which a voxel's plain
    estimate is restored at the end of a run (:class:`persodose.mc.tally.Tally`).
    """
    stratified = settings_f[14] > 0.5 and n_strata > 0
    control_on = settings_f[15] > 0.5
    n_vox = nz * ny * nx
    second = edep.shape[0] >= 2 * n_vox
    for j in range(n_decays):
        # decay position: a voxel by its activity, uniform inside it
        if stratified:
            r = (stratum0 + j + uniform(rng)) / n_strata * src_cdf[src_cdf.shape[0] - 1]
        else:
            r = uniform(rng) * src_cdf[src_cdf.shape[0] - 1]
        lo = 0
        hi = src_cdf.shape[0] - 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if src_cdf[mid] > r:
                hi = mid
            else:
                lo = mid + 1
        vox = src_index[lo]
        ix = vox % nx
        iy = (vox // nx) % ny
        iz = vox // (nx * ny)
        x = (ix + uniform(rng)) * sx
        y = (iy + uniform(rng)) * sy
        z = (iz + uniform(rng)) * sz
        control = False
        if control_on and dens[vox] >= settings_f[16]:
            share = src_cdf[lo] - src_cdf[lo - 1] if lo > 0 else src_cdf[lo]
            control = share >= settings_f[17] * src_cdf[src_cdf.shape[0] - 1]
        if not control:  # with it, the energy left in place is in the expectation (the counters too)
            deposit(edep, vox, local_mev)
            ctr[C_DEPOSITED] += local_mev
            ctr[C_EMITTED] += local_mev
        elif second:
            deposit(edep, n_vox + vox, local_mev)
        ctr[C_BELOW_CUT] += local_mev
        sp = 0
        for b in range(2):
            yb = beta_yields[b]
            if yb <= 0.0:
                continue
            nb = int(yb)
            if uniform(rng) < yb - nb:
                nb += 1
            for _k in range(nb):
                if b == 0:
                    eb = _sample_cdf(beta_minus_e, beta_minus_cdf, rng)
                else:
                    eb = _sample_cdf(beta_plus_e, beta_plus_cdf, rng)
                du, dv, dw = _isotropic(rng)
                if control:  # taken back from the birth voxel: in the expectation (the counters too)
                    deposit(edep, vox, -eb)
                    ctr[C_DEPOSITED] -= eb
                    if second:
                        deposit(edep, n_vox + vox, eb)
                else:
                    ctr[C_EMITTED] += eb
                sp = _push(stk, sp, ELECTRON if b == 0 else POSITRON, eb, x, y, z, du, dv, dw, ctr, edep, vox)
        if line_total > 0.0:
            nl = int(line_total)
            if uniform(rng) < line_total - nl:
                nl += 1
            for _k in range(nl):
                j = _search(line_cum, uniform(rng) * line_cum[line_cum.shape[0] - 1])
                el = line_e[j]
                du, dv, dw = _isotropic(rng)
                if control and line_kind[j] != PHOTON:
                    deposit(edep, vox, -el)
                    ctr[C_DEPOSITED] -= el
                    if second:
                        deposit(edep, n_vox + vox, el)
                else:
                    ctr[C_EMITTED] += el
                sp = _push(stk, sp, line_kind[j], el, x, y, z, du, dv, dw, ctr, edep, vox)
        _process_stack(stk, sp, dens, mat, nz, ny, nx, sz, sy, sx, log_emin, inv_dlog, n_e, photon, majorant,
                       compton_sf, rayleigh_cum, x_nodes, electron, settings_f, range_rejection, edep, ctr, rng)


@_physics()
def particle_chunk(rng, n_particles, kind, energy_e, energy_cdf, origin_xyz, direction_xyz, isotropic,
                   nz, ny, nx, sz, sy, sx, dens, mat,
                   log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                   settings_f, range_rejection, edep, ctr, stk):
    """``n_particles`` primaries from a point on one random stream: the work of one chunk (any target)."""
    for _ in range(n_particles):
        if energy_e.shape[0] == 1:
            e0 = energy_e[0]
        else:
            e0 = _sample_cdf(energy_e, energy_cdf, rng)
        if isotropic:
            du, dv, dw = _isotropic(rng)
        else:
            du = direction_xyz[0]
            dv = direction_xyz[1]
            dw = direction_xyz[2]
        ctr[C_EMITTED] += e0
        vox = _voxel_of(origin_xyz[0], origin_xyz[1], origin_xyz[2], nz, ny, nx, sz, sy, sx)
        sp = _push(stk, 0, kind, e0, origin_xyz[0], origin_xyz[1], origin_xyz[2], du, dv, dw, ctr, edep,
                   _fmax(vox, 0))
        _process_stack(stk, sp, dens, mat, nz, ny, nx, sz, sy, sx, log_emin, inv_dlog, n_e, photon, majorant,
                       compton_sf, rayleigh_cum, x_nodes, electron, settings_f, range_rejection, edep, ctr, rng)


@_physics()
def beam_chunk(start, n_particles, origins, directions, energies, nz, ny, nx, sz, sy, sx, dens, mat,
               log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
               settings_f, range_rejection, edep, ctr, stk, rng):
    """Photons ``start .. start+n-1`` of given origins, directions (grid axes, mm) and energies.

    Outside the grid is vacuum: each photon goes straight to where its ray enters the grid
    (slab method) and is transported from there; a photon whose ray misses escapes.
    """
    lx = nx * sx
    ly = ny * sy
    lz = nz * sz
    for i in range(start, start + n_particles):
        e0 = energies[i]
        ox = origins[i, 0]
        oy = origins[i, 1]
        oz = origins[i, 2]
        u = directions[i, 0]
        v = directions[i, 1]
        w = directions[i, 2]
        ctr[C_EMITTED] += e0
        t_in = -1e30
        t_out = 1e30
        hit = True
        for a in range(3):
            if a == 0:
                o = ox
                d = u
                lo_b = 0.0
                hi_b = lx
            elif a == 1:
                o = oy
                d = v
                lo_b = 0.0
                hi_b = ly
            else:
                o = oz
                d = w
                lo_b = 0.0
                hi_b = lz
            if d == 0.0:
                if o < lo_b or o > hi_b:
                    hit = False
            else:
                t1 = (lo_b - o) / d
                t2 = (hi_b - o) / d
                t_in = _fmax(t_in, _fmin(t1, t2))
                t_out = _fmin(t_out, _fmax(t1, t2))
        t_in = _fmax(t_in, 0.0)
        if not hit or t_out <= t_in:
            ctr[C_ESCAPED] += e0
            ctr[C_UNCOLLIDED] += e0
            continue
        t = t_in + 1e-7 * (t_out - t_in)
        x = ox + t * u
        y = oy + t * v
        z = oz + t * w
        vox = _voxel_of(x, y, z, nz, ny, nx, sz, sy, sx)
        sp = _push(stk, 0, PHOTON, e0, x, y, z, u, v, w, ctr, edep, _fmax(vox, 0))
        _process_stack(stk, sp, dens, mat, nz, ny, nx, sz, sy, sx, log_emin, inv_dlog, n_e, photon, majorant,
                       compton_sf, rayleigh_cum, x_nodes, electron, settings_f, range_rejection, edep, ctr, rng)


# ----------------------------------------------------------------------------- CPU drivers
@njit(parallel=True, cache=True)
def run_decays(seed, stream0, decays_per_chunk, src_index, src_cdf, nz, ny, nx, sz, sy, sx, dens, mat,
               local_mev, beta_yields, beta_minus_e, beta_minus_cdf, beta_plus_e, beta_plus_cdf,
               line_kind, line_e, line_cum, line_total,
               log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
               settings_f, range_rejection, edep, ctr, stacks):
    """Simulate radionuclide decays, chunk by chunk in parallel.

    Each chunk has its own random stream ``(seed, stream0 + chunk)``, so results do not
    depend on how chunks are spread over threads (up to the order of floating-point sums).
    ``edep`` (n_threads, n_vox) and ``ctr`` (n_threads, C_N) receive the tallies.
    """
    n_chunks = decays_per_chunk.shape[0]
    for c in prange(n_chunks):
        tid = numba.get_thread_id()
        rng = np.empty(2, dtype=np.uint64)
        seed_state(rng, seed, stream0 + c)
        stratum0, n_strata = chunk_strata(decays_per_chunk, c)
        decay_chunk(rng, decays_per_chunk[c], stratum0, n_strata, src_index, src_cdf, nz, ny, nx, sz, sy, sx,
                    dens, mat,
                    local_mev, beta_yields, beta_minus_e, beta_minus_cdf, beta_plus_e, beta_plus_cdf,
                    line_kind, line_e, line_cum, line_total,
                    log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                    settings_f, range_rejection, edep[tid], ctr[tid], stacks[tid])


@njit(parallel=True, cache=True)
def run_particles(seed, stream0, per_chunk, kind, energy_e, energy_cdf, origin_xyz, direction_xyz, isotropic,
                  nz, ny, nx, sz, sy, sx, dens, mat,
                  log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                  settings_f, range_rejection, edep, ctr, stacks):
    """Simulate primary particles of one kind from a point (monoenergetic or a spectrum).

    ``origin_xyz`` is in mm from the grid corner, (x, y, z); ``direction_xyz`` is used when
    ``isotropic`` is False (a pencil beam).
    """
    n_chunks = per_chunk.shape[0]
    for c in prange(n_chunks):
        tid = numba.get_thread_id()
        rng = np.empty(2, dtype=np.uint64)
        seed_state(rng, seed, stream0 + c)
        particle_chunk(rng, per_chunk[c], kind, energy_e, energy_cdf, origin_xyz, direction_xyz, isotropic,
                       nz, ny, nx, sz, sy, sx, dens, mat,
                       log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                       settings_f, range_rejection, edep[tid], ctr[tid], stacks[tid])


@njit(parallel=True, cache=True)
def run_beam(seed, stream0, chunk_start, chunk_n, origins, directions, energies, nz, ny, nx, sz, sy, sx, dens, mat,
             log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
             settings_f, range_rejection, edep, ctr, stacks):
    """Photons from external sources (CT tube positions), chunk by chunk in parallel."""
    n_chunks = chunk_start.shape[0]
    for c in prange(n_chunks):
        tid = numba.get_thread_id()
        rng = np.empty(2, dtype=np.uint64)
        seed_state(rng, seed, stream0 + c)
        beam_chunk(chunk_start[c], chunk_n[c], origins, directions, energies, nz, ny, nx, sz, sy, sx, dens, mat,
                   log_emin, inv_dlog, n_e, photon, majorant, compton_sf, rayleigh_cum, x_nodes, electron,
                   settings_f, range_rejection, edep[tid], ctr[tid], stacks[tid], rng)
