"""Which size-aware HDBSCAN / UMAP rules (nscnet/defaults.py) to choose: NMI of UMAP + HDBSCAN
and PCA + HDBSCAN under candidate rules for min_cluster_size / min_samples and UMAP n_neighbors,
on seeded subsets (50, 200, 1,000; 3 draws) of a labelled dataset and on whole datasets.

    python benchmarks/size_defaults.py BENGALESE_DATASET [WHOLE_DATASET ...] [--full]

BENGALESE_DATASET: a `nscnet preprocess` folder of the Bengalese finch syllables (docs/clustering.md
used --duration_s 0.3 --frames 64 --n_mels 32 --pad center); WHOLE_DATASET: other labelled
folders used whole (e.g. `nscnet synth` + `preprocess`); --full also runs the whole first set.
Prints one line per (set, space, rule): mean +- std NMI, noise share, clusters.
"""
import sys, numpy as np
import umap
from sklearn.cluster import HDBSCAN
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score as nmi
from sklearn.preprocessing import normalize

from nscnet.images.dataset import read_dataset

def feats(ds, idx):
    x = np.asarray(ds.images[np.sort(idx)], dtype=np.float32).reshape(len(idx), -1)
    return PCA(min(64, len(idx) - 1), random_state=0).fit_transform(x)

def rules(n):
    r = lambda v, lo: max(lo, int(round(v)))
    out = {"old5/5": (5, 5)}
    if n >= 60: out["quality50/10"] = (50, 10)
    for name, m in (("N/200", r(n/200, 2)), ("N/100", r(n/100, 2)), ("N/50", r(n/50, 2)), ("sqrtN/2", r(np.sqrt(n)/2, 2))):
        out[name + " ms=mcs"] = (m, m)
        out[name + " ms=mcs/4"] = (m, r(m/4, 1))
    return {k: v for k, v in out.items() if v[0] <= n}

sets = []
args = [a for a in sys.argv[1:] if not a.startswith("--")]
bf = read_dataset(args[0]); tb = bf.truth()
rng = np.random.default_rng(0)
for size in (50, 200, 1000):
    for d in range(3):
        sets.append((f"bf{size}", bf, tb, rng.choice(len(bf), size, replace=False)))
if "--full" in sys.argv: sets.append(("bf7652", bf, tb, np.arange(len(bf))))
for path in args[1:]:
    ds = read_dataset(path); sets.append((path.rstrip("/").split("/")[-1], ds, ds.truth(), np.arange(len(ds))))
rows = []
for name, ds, truth, idx in sets:
    idx = np.sort(idx); t = truth[idx]; n = len(idx)
    x = feats(ds, idx)
    spaces = {"pca+l2": normalize(x)}
    for nn_name, nn in (("umap15", 15), ("umapsqrt", max(2, min(15, int(round(np.sqrt(n))))))):
        if nn_name == "umapsqrt" and nn == 15: spaces[nn_name] = spaces["umap15"]; continue
        spaces[nn_name] = umap.UMAP(n_components=min(10, n - 2), n_neighbors=min(nn, n - 1), min_dist=0.0, random_state=0, n_jobs=1).fit_transform(x)
    for sp, z in spaces.items():
        for rule, (mcs, ms) in rules(n).items():
            lab = HDBSCAN(min_cluster_size=max(mcs, 2), min_samples=ms, copy=True).fit_predict(z)
            rows.append((name, sp, rule, nmi(t, lab), (lab == -1).mean(), len(set(lab) - {-1})))
    print(name, n, "done", flush=True)
import collections
agg = collections.defaultdict(list)
for name, sp, rule, v, noise, k in rows:
    agg[(name, sp, rule)].append((v, noise, k))
for key in sorted(agg):
    a = np.array(agg[key]); print(f"{key[0]:8s} {key[1]:9s} {key[2]:20s} nmi {a[:,0].mean():.3f}±{a[:,0].std():.3f} noise {a[:,1].mean():.2f} k {a[:,2].mean():.1f}")
