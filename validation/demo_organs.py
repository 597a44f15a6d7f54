"""Organ mean doses (mass-weighted) of the demo's Lu-177 image-based methods against Monte Carlo on the true TIA.

Usage: python validation/demo_organs.py DEMO_OUT [METHOD ...]   (default: dblurdosenet mc; reads the
``organs_*.csv`` that ``persodose demo --out DEMO_OUT`` writes)
"""
import csv, sys
b = sys.argv[1] + '/lu177-dotatate/'
def read(f):
    return {r['name']: float(r['mass_weighted_mean_Gy']) for r in csv.DictReader(open(f))}
ref = read(b + 'internal_true_tia/organs_mc.csv')
meths = sys.argv[2:] or ['dblurdosenet', 'mc']
tabs = [read(b + f'internal_from_images/organs_{m}.csv') for m in meths]
print(f"{'organ':18s}", "  ".join(f"{m:>12s}" for m in meths))
for k in ('kidney_left', 'kidney_right', 'spleen', 'liver', 'lesion_liver', 'lesion_pancreas', 'lesion_lymph_node',
          'lesion_bone', 'bladder', 'ribs'):
    print(f"{k:18s}", "  ".join(f"{100 * (t[k] / ref[k] - 1):+11.1f}%" for t in tabs))
