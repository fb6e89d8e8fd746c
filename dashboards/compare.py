"""Write the comparison page of an experiment's runs (one self-contained plotly HTML page).

    PYTHONPATH=. python dashboards/compare.py --experiment nscnet --out dashboards/nscnet-comparison.html

Reads the tracking store of `nscnet.tracking.tracking_uri()` (MLFLOW_TRACKING_URI, or ./mlflow.db).
Panels: silhouette, n_clusters, zipf_s and the *_truth metrics, one point per run; nmi_prev,
one curve per run. `nscnet study` writes and logs the same page when a worker ends.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nscnet.dashboards import write_comparison  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="nscnet")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    out = write_comparison(args.experiment, args.out or f"dashboards/{args.experiment}-comparison.html")
    print(f"comparison page: {out.resolve()}")


if __name__ == "__main__":
    main()
