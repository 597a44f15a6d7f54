"""HTML page of a virtual population: coronal CT and labels side by side, sizes and organ masses."""

from __future__ import annotations

import numpy as np

_MASS_COLUMNS = ("liver", "spleen", "kidneys", "lungs", "heart", "brain")
#: Organs added to population patients that have ICRP 89 masses (anatomy.ORGAN_LABELS, population.ICRP89_EXTRA).
_ADDED_COLUMNS = ("pancreas", "oesophagus", "spinal_cord", "gall_bladder", "small_intestine", "colon", "rectum",
                  "thymus", "thyroid", "salivary_glands")


def _panels_figure(thumbs: list[dict], patients: list[dict], key: str):
    """One row of coronal slices (``key`` = ``ct`` or ``labels``), head up, same mm scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(thumbs)
    per_row = min(n, 10)
    rows = int(np.ceil(n / per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(1.6 * per_row, 3.4 * rows), squeeze=False)
    # place each slice at its true height above the soles (the vertex at the patient's height)
    z_max = max(p["height_m"] * 1000.0 for p in patients)
    z_min = min(p["height_m"] * 1000.0 - t[key].shape[0] * t["voxel_mm"] for t, p in zip(thumbs, patients))
    x_max = max(t[key].shape[1] * t["voxel_mm"] for t in thumbs)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (t, p) in enumerate(zip(thumbs, patients)):
        ax = axes.ravel()[k]
        img = t[key][::-1]  # grid z increases to the head: flip so that the head is up
        h, w = img.shape[0] * t["voxel_mm"], img.shape[1] * t["voxel_mm"]
        top = p["height_m"] * 1000.0
        ext = (-w / 2, w / 2, top - h, top)
        if key == "ct":
            ax.imshow(img, cmap="gray", vmin=-400, vmax=500, extent=ext, interpolation="nearest")
        else:  # per-lesion labels (40 ...) shown in one colour, their necrotic cores (70 ...) in another
            img = np.where(img >= 70, 29, np.where(img >= 40, 22, img))
            ax.imshow(np.ma.masked_equal(img, 0), cmap="tab20", vmin=0, vmax=32, extent=ext, interpolation="nearest")
        ax.set_xlim(-x_max / 2, x_max / 2)
        ax.set_ylim(z_min, z_max)
        arms = {"up": ", arms up", "down": ", arms down"}.get(p.get("arms"), "")
        ax.set_title(f"#{p['index']} {p['sex']} {p['height_m'] * 100:.0f} cm\n{p['weight_kg']:.0f} kg {p['split']}{arms}",
                     fontsize=7)
    fig.tight_layout()
    return fig


def _mass_table(pts: list[dict], organs) -> tuple[list, list]:
    """Columns and rows: per patient, voxelised mass (ICRP 89 reference / scaled) of each organ, g."""
    cols = ["#", "sex"] + [f"{o} g (ICRP 89 ref / scaled)" for o in organs]
    rows = []
    for p in pts:
        row = [p["index"], p["sex"]]
        for o in organs:
            row.append(f"{p['organ_masses_g'].get(o, 0):.0f} ({p['icrp89_reference_masses_g'][o]:.0f} / "
                       f"{p['icrp89_scaled_masses_g'][o]:.0f})")
        rows.append(row)
    return cols, rows


def _masses_figure(patients: list[dict]):
    """Voxelised organ mass / ICRP 89 reference of the patient's sex, against height."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 1, figsize=(7, 3.5))
    for organ in _MASS_COLUMNS:
        h = [p["height_m"] * 100 for p in patients]
        r = [p["organ_masses_g"].get(organ, np.nan) / p["icrp89_reference_masses_g"][organ] for p in patients]
        ax.plot(h, r, "o", label=organ, ms=4)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("height (cm)")
    ax.set_ylabel("mass / ICRP 89 reference")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return fig


def population_report(doc: dict, thumbs: list[dict]):
    """The :class:`persodose.report.html.Report` of a population (``doc`` is population.json)."""
    from persodose.report.html import Report

    pts = doc["patients"]
    rep = Report(f"Virtual population: {doc['n']} patients, seed {doc['population_seed']}, {doc['tracer']}")
    rep.text(f"Voxel {doc['voxel_mm']} mm. Split rule: {doc['split_rule']}. Mass rule: {doc['mass_rule']}.")
    rep.heading("Patients")
    rep.figure(_panels_figure(thumbs, pts, "ct"),
               caption="Coronal CT (-400 to 500 HU), head up, common mm scale, each slice at its true height above "
                       "the soles")
    rep.figure(_panels_figure(thumbs, pts, "labels"), caption="Coronal labels, same slices")
    cols = ["#", "seed", "split", "sex", "height cm", "weight kg", "BMI", "fat mm", "lung HU", "arms",
            "organ deformation rms mm", "lesions (necrotic)", "lesion kinds"]
    rows = [[p["index"], p["seed"], p["split"], p["sex"], round(p["height_m"] * 100, 1), p["weight_kg"], p["bmi"],
             p["fat_thickness_mm"], p["lung_hu"], p.get("arms"), p.get("deformation_rms_mm"),
             f"{len(p['lesions'])} ({sum(1 for q in p['lesions'] if q.get('necrotic_fraction'))})",
             ", ".join(sorted({q.get("kind", q["name"]).replace("lesion_", "") for q in p["lesions"]}))]
            for p in pts]
    rep.table(cols, rows, caption="Patients")
    rep.heading("Organ masses against ICRP 89")
    caption = "Voxelised mass (ICRP 89 reference of the sex / scaled to the patient's size)"
    rep.table(*_mass_table(pts, _MASS_COLUMNS), caption=caption)
    added = [o for o in _ADDED_COLUMNS if all(o in p["icrp89_scaled_masses_g"] for p in pts)]
    if added:
        rep.table(*_mass_table(pts, added), caption=caption + ", organs added to population patients")
    rep.figure(_masses_figure(pts), caption="Organ mass relative to the ICRP 89 reference adult of the same sex")
    return rep
