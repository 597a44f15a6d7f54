"""Population anatomy: arms, organ deformation, per-lesion labels and kinetics, necrotic cores,
lung lesions, the female pelvis; and the fingerprint of the built-in demo patient."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from persodose.phantoms import AnatomyParams, build_anatomy, make_virtual_patient
from persodose.phantoms.anatomy import LesionSpec, deformation_field, lesion_kind, lesion_labels
from persodose.phantoms.population import _draw_deformation, draw_population, make_population_patient

V = 8.0

#: sha256 of the seed-0 demo patient at 8 mm (labels, CT, truth TIA, truth activities, emission
#: images, organ TIAs and masses), recorded at commit f77f292, before the population anatomy of
#: arms, deformations and per-lesion labels: the demo patient must stay bit for bit the same.
DEMO_FINGERPRINT = {
    "lu177-dotatate": "f508bdd01b3a290072a492e48d2065b377d9f95ae8fea31b8028379129c16e74",
    "fdg": "581311ddbdf025ce32a0d5831715f3b4a82571bdc522ce9e59f6c31488755ddc",
}


def _fingerprint(vp) -> str:
    h = hashlib.sha256()
    for g in [vp.labels, vp.ct, vp.truth_tia, *vp.truth_activity, *[f.image for f in vp.frames]]:
        h.update(g.array.tobytes())
    h.update(json.dumps({n: m.tia_bq_s() for n, m in sorted(vp.organ_tac.items())}, sort_keys=True).encode())
    h.update(json.dumps(vp.organ_masses_g, sort_keys=True).encode())
    return h.hexdigest()


@pytest.mark.parametrize("tracer", sorted(DEMO_FINGERPRINT))
def test_demo_patient_fingerprint_is_unchanged(tracer):
    assert _fingerprint(make_virtual_patient(tracer, voxel_mm=8.0, seed=0)) == DEMO_FINGERPRINT[tracer]


def _base(**kw):
    return AnatomyParams(**{"sex": "M", "sex_organs": True, "lesions": (), **kw})


def _row(an, h_mm):
    return int(np.argmin(np.abs(an.h_mm - h_mm)))


def test_arms_down_lie_beside_the_trunk_and_up_leave_its_field():
    none, down, up = (build_anatomy(V, None, _base(arms=a)) for a in (None, "down", "up"))
    assert 32 not in np.unique(none.labels)
    k = _row(none, 1100.0)  # painted on air only: the trunk is untouched at the waist
    assert np.array_equal(up.labels[k], none.labels[k])
    kd, ku = _row(down, 1250.0), _row(up, 1250.0)
    # at the level of the upper arms (H 1250 mm): arm bones on both sides, outside the trunk
    xs = down.x_mm[np.nonzero((down.labels[kd] == 32).any(axis=0))[0]]
    assert xs.min() < -180 and xs.max() > 180 and np.all(np.abs(xs) > 180)
    # arms up: nothing beside the trunk at that level, the body is as wide as without arms
    width = [np.count_nonzero((an.labels[_row(an, 1250.0)] > 0).any(axis=0)) for an in (none, up)]
    assert width[0] == width[1]
    assert not (up.labels[ku] == 32).any()
    # the raised arms are beside the head
    kh = _row(up, 1700.0)
    xs = up.x_mm[np.nonzero((up.labels[kh] == 32).any(axis=0))[0]]
    assert xs.size and np.all(np.abs(xs) > 90)
    assert down.labels.shape[2] >= none.labels.shape[2] and up.labels.shape == none.labels.shape


def test_deformation_field_is_divergence_free_and_small():
    rng = np.random.default_rng(3)
    modes = np.asarray(_draw_deformation(rng))
    assert np.sum(modes[:, 0] * np.linalg.norm(modes[:, 4:7], axis=1)) <= 0.5 + 1e-9
    p = rng.uniform(-200, 200, (3, 200)) + np.array([[0.0], [0.0], [1200.0]])
    e = 1e-3
    div = 0.0
    for i in range(3):
        dp, dm = p.copy(), p.copy()
        dp[i] += e
        dm[i] -= e
        div = div + (deformation_field(modes, *dp)[i] - deformation_field(modes, *dm)[i]) / (2 * e)
    # (modes are stored to 6 decimals; a longitudinal mode of this size would give ~0.1)
    assert np.max(np.abs(div)) < 1e-4
    d = np.sqrt(sum(q ** 2 for q in deformation_field(modes, *p)))
    assert 0.5 < float(np.sqrt(np.mean(d ** 2))) < 12.0 and float(d.max()) < 30.0


def _centroid(an, label):
    k, j, i = np.nonzero(an.labels == label)
    return np.array([an.x_mm[i].mean(), an.y_mm[j].mean(), an.h_mm[k].mean()])


def test_deformed_organs_change_shape_keep_volume_and_order():
    modes = _draw_deformation(np.random.default_rng(11))
    flat, bent = build_anatomy(V, None, _base()), build_anatomy(V, None, _base(deformation=modes))
    organs = {"liver": 7, "spleen": 8, "kidney_left": 9, "kidney_right": 10, "heart": 6, "stomach": 12, "bladder": 11}
    moved = 0
    for name, lab in organs.items():
        a, b = flat.labels == lab, bent.labels == lab
        assert abs(b.sum() / a.sum() - 1.0) < 0.12, name  # divergence-free: volume about kept
        moved += int(np.count_nonzero(a ^ b) > 0.05 * a.sum())
        assert np.linalg.norm(_centroid(flat, lab) - _centroid(bent, lab)) < 30.0, name
    assert moved >= 4
    c = {n: _centroid(bent, lab) for n, lab in organs.items()}
    assert c["liver"][0] < c["spleen"][0] and c["kidney_right"][0] < c["kidney_left"][0]
    assert c["heart"][2] > c["liver"][2] > c["kidney_left"][2] > c["bladder"][2]
    body = np.isin(bent.labels, [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    assert np.all(body[np.isin(bent.labels, list(organs.values()))])


def test_each_lesion_has_its_own_label_and_core():
    les = (LesionSpec("lesion_liver", 40.0, (0.3, 0.5, 0.5), 0.6), LesionSpec("lesion_liver", 10.0, (0.7, 0.5, 0.5)),
           LesionSpec("lesion_lung", 8.0, (0.5, 0.5, 0.5)))
    assert lesion_labels(les) == [(40, "lesion_liver_1", 70, "lesion_liver_1_necrosis"),
                                  (41, "lesion_liver_2", None, None), (42, "lesion_lung_1", None, None)]
    assert [lesion_kind(n) for n in ("lesion_lymph_node_3", "lesion_liver_1_necrosis", "lesion_liver", "liver")] \
        == ["lesion_lymph_node", "necrosis", None, None]
    v = 4.0
    without = build_anatomy(v, None, _base())
    an = build_anatomy(v, None, _base(lesions=les))
    assert an.extra_labels == {40: "lesion_liver_1", 70: "lesion_liver_1_necrosis", 41: "lesion_liver_2",
                               42: "lesion_lung_1"}
    vox_ml = v ** 3 / 1000
    whole = (np.count_nonzero(an.labels == 40) + np.count_nonzero(an.labels == 70)) * vox_ml
    assert whole == pytest.approx(40.0, rel=0.15)
    assert np.count_nonzero(an.labels == 70) * vox_ml == pytest.approx(40.0 * 0.6 ** 3, rel=0.3)
    assert np.isin(without.labels[an.labels == 42], [4, 5]).all()  # the lung lesion is inside a lung
    assert np.all(without.labels[np.isin(an.labels, [40, 41, 70])] == 7)  # liver lesions inside the liver


@pytest.fixture(scope="module")
def pop_patients():
    specs = draw_population(8, 1)
    chosen = [s for s in specs if any(les.necrotic_fraction > 0 for les in s.anatomy.lesions)][:1]
    chosen += [s for s in specs if len(s.anatomy.lesions) >= 2 and s not in chosen][:1]
    return [(s, make_population_patient(s, "lu177-dotatate", 8.0)) for s in chosen]


def test_every_lesion_has_its_own_curve_and_a_core_has_no_uptake(pop_patients):
    assert len(pop_patients) == 2
    for spec, vp in pop_patients:
        names = {n for n in vp.label_names.values() if lesion_kind(n) not in (None, "necrosis")}
        assert names and names <= set(vp.organ_tac)
        assert not {"lesion_liver", "lesion_bone", "lesion_lymph_node", "lesion_pancreas"} & set(vp.organ_tac)
        for n in names:  # per mL and kinetics differ between lesions
            assert vp.organ_tac[n].tia_bq_s() > 0
        tias = {round(vp.organ_tac[n].tia_bq_s() / vp.organ_masses_g[n], 3) for n in names}
        assert len(tias) == len(names)
        name_to_label = {n: k for k, n in vp.label_names.items()}
        for n in vp.label_names.values():
            if lesion_kind(n) == "necrosis":
                core = vp.labels.array == name_to_label[n]
                assert core.any() and float(vp.truth_tia.array[core].sum()) == 0.0
                assert all(float(a.array[core].sum()) == 0.0 for a in vp.truth_activity)
    spec, vp = pop_patients[0]
    assert any(les.necrotic_fraction > 0 for les in spec.anatomy.lesions)


def test_population_draws_arms_pelvis_and_lung_lesions():
    specs = draw_population(40, 2)
    assert {s.anatomy.arms for s in specs} == {"up", "down"}
    assert all(s.anatomy.pelvis_width == (1.06 if s.sex == "F" else 1.0) for s in specs)
    assert any(les.name == "lesion_lung" for s in specs for les in s.anatomy.lesions)
    assert all(len(s.lesion_kinetic_factors) == len(s.anatomy.lesions) for s in specs)
    assert len({s.anatomy.deformation for s in specs}) == 40


def test_female_pelvis_is_wider():
    m = build_anatomy(V, None, _base())
    f = build_anatomy(V, None, _base(pelvis_width=1.06))
    def half_width(an):
        return float(np.abs(an.x_mm[np.nonzero((an.labels == 16).any(axis=(0, 1)))[0]]).max())
    assert half_width(f) > half_width(m) + 4.0
    assert math.isclose(float(np.abs(_centroid(f, 17)[0])) / float(np.abs(_centroid(m, 17)[0])), 1.06, rel_tol=0.05)
