"""The organs added to population patients (anatomy.ORGAN_LABELS): masses against their ICRP 89
targets, places, no earlier organ overwritten, and the earlier draws of the population kept."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from persodose.phantoms import anatomy as A
from persodose.phantoms.population import (ICRP89_EXTRA, MODEL_MASS_G, draw_population, model_masses_g)

V = 4.0
SEED = 5  # both sexes among the first 4 patients (test_population.py)


@pytest.fixture(scope="module")
def built():
    specs = draw_population(4, SEED)
    return [(s, A.build_anatomy(V, None, s.anatomy)) for s in specs]


def test_every_added_organ_is_labelled_with_density_and_reference_mass():
    assert set(A.ORGAN_LABELS).isdisjoint({**A.LABELS, **A.SEX_LABELS, **A.ARM_LABELS})
    assert max(A.LESION_LABEL_FIRST + A.MAX_LESIONS - 1 + A.NECROSIS_LABEL_OFFSET, 0) < min(A.ORGAN_LABELS)
    for name in A.ORGAN_LABELS.values():
        assert 1.0 < A.nominal_density_g_cm3(name) < 1.1
        assert name in MODEL_MASS_G
    assert ICRP89_EXTRA["M"]["pancreas"] == 140.0 and ICRP89_EXTRA["F"]["thyroid"] == 17.0
    got = model_masses_g(V)
    for name in A.ORGAN_LABELS.values():
        assert abs(got[name] / MODEL_MASS_G[name] - 1.0) < 0.005, name


def test_added_organ_masses_near_their_targets(built):
    """Measured at 4 mm on these 4 patients (largest deviation from the drawn target): IVC
    -32 %, small intestine -31 % (a woman's: uterus and ovaries take its pelvic part), gall
    bladder +23 %, pancreas -21 %, rectum -20 %, spinal cord -16 %, salivary glands -13 %, the
    others under 10 %; the portal vein (3-7 g, a 7 mm tube mostly hidden by the liver) +83 %."""
    for spec, an in built:
        masses = A.organ_masses_g(an.labels, V, A.ORGAN_LABELS)
        for name in A.ORGAN_LABELS.values():
            want = spec.target_masses_g[name]
            tol = 1.0 if name == "portal_vein" else 0.35
            assert masses[name] > 0.0, (spec.index, name)
            assert abs(masses[name] / want - 1.0) < tol, (spec.index, name, masses[name], want)


def test_added_organs_overwrite_no_other_organ():
    """With and without the added organs, every other label has the same voxels (they take
    soft tissue and muscle only)."""
    for spec in draw_population(2, SEED):
        p = dataclasses.replace(spec.anatomy, lesions=())
        with_ = A.build_anatomy(V, None, p).labels
        without = A.build_anatomy(V, None, dataclasses.replace(p, extra_organs=False)).labels
        changed = with_ != without
        assert set(np.unique(without[changed]).tolist()) <= {1, 3}
        assert set(np.unique(with_[changed]).tolist()) <= set(A.ORGAN_LABELS)


def _centroid(an, mask):
    k, j, i = np.nonzero(mask)
    return float(an.x_mm[i].mean()), float(an.y_mm[j].mean()), float(an.h_mm[k].mean())


def test_added_organs_are_inside_the_body_and_in_place(built):
    for spec, an in built[:2]:
        lab = an.labels
        body = ndimage.binary_erosion(ndimage.binary_fill_holes(lab > 0))
        for val in A.ORGAN_LABELS:
            m = lab == val
            assert m.any() and not (m & ~body).any(), (spec.index, A.ORGAN_LABELS[val])
        h = an.h_mm[:, None, None]
        # spinal cord: in the spinal canal (between the neural arches: at most one voxel off it)
        cord = lab == 102
        assert (cord & an.aux["canal"]).sum() > 0.6 * cord.sum()
        assert not (cord & ~ndimage.binary_dilation(an.aux["canal"], iterations=1)).any()
        # aorta: the blood of the aorta the CT model knows
        assert not ((lab == 103) & ~an.aux["aorta"]).any()
        # thyroid in the neck, either side of the midline, at C7-T1
        thy = lab == 111
        assert (np.broadcast_to(h, lab.shape)[thy] > 1440).all() and (np.broadcast_to(h, lab.shape)[thy] < 1560).all()
        x, _, _ = _centroid(an, thy)
        assert abs(x) < 5.0 and ((lab == 111) & (an.x_mm > 0)).any() and ((lab == 111) & (an.x_mm < 0)).any()
        # rectum in the pelvis: below the iliac crests, behind the bladder
        pel = np.nonzero((lab == 16).any(axis=(1, 2)))[0]
        xr, yr, hr = _centroid(an, lab == 109)
        assert an.h_mm[pel].min() < hr < an.h_mm[pel].max() and abs(xr) < 50.0
        assert yr > _centroid(an, lab == 11)[1]
        # pancreas behind the stomach at the kidneys' level; thymus above and in front of the heart
        xp, yp, hp = _centroid(an, lab == 100)
        kid = np.isin(lab, [9, 10])
        assert yp > _centroid(an, lab == 12)[1] and _centroid(an, kid)[2] - 60 < hp < _centroid(an, kid)[2] + 60
        _, yt, ht = _centroid(an, lab == 110)
        _, yh, hh = _centroid(an, lab == 6)
        assert ht > hh and yt < yh
        # oesophagus from the neck to the abdomen, near the midline; salivary glands in the head-neck
        oes = np.nonzero((lab == 101).any(axis=(1, 2)))[0]
        assert an.h_mm[oes].min() < 1200 and an.h_mm[oes].max() > 1540
        assert (np.broadcast_to(h, lab.shape)[lab == 112] > 1530).all()


def test_earlier_draws_are_unchanged():
    """Population seed 1, first 4 patients: seeds, split, sex, size, lung density, arms,
    deformation and lesion volumes as written before the organs were added (commit d7b5a2e)."""
    want = [(3717377837946358015, "training", "F", 1.5861, 25.65, -752.3, "up", [20.746, 15.184, 12.466, 14.801, 5.672]),
            (38901565946305238, "training", "M", 1.8399, 18.0, -720.6, "down", [3.641, 4.863, 3.451, 2.037, 26.962]),
            (7764949442709860949, "training", "F", 1.7085, 21.84, -706.0, "up",
             [23.176, 31.259, 11.887, 14.344, 3.453, 1.055, 0.533]),
            (8789938331783242616, "training", "F", 1.5951, 22.19, -842.7, "up", [7.415, 8.826, 17.246])]
    for s, w in zip(draw_population(4, 1), want):
        got = (s.seed, s.split, s.sex, s.height_m, s.bmi, s.lung_hu, s.anatomy.arms,
               [les.volume_ml for les in s.anatomy.lesions])
        assert got == w
    assert draw_population(4, 1)[3].kinetic_factors["fdg"]["liver"] == [1.6, None]
