"""Write the comparison page of an experiment's runs (one self-contained plotly HTML page).

    python dashboards/compare.py --experiment nscnet --out nscnet-comparison.html

Reads the tracking store of `nscnet.runs.tracking.tracking_uri()` (MLFLOW_TRACKING_URI, or ./mlflow.db).
Writes to `--out`, by default `<experiment>-comparison.html` in the working directory (never
into this folder). Panels: silhouette, n_clusters, zipf_s and the *_truth metrics, one point
per run; nmi_prev, one curve per run. `nscnet study` logs the same page to its run when a
worker ends.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nscnet.ui.dashboards import comparison_name, write_comparison  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="nscnet")
    parser.add_argument("--out", default="", help="the page's path (default: <experiment>-comparison.html "
                                                  "in the working directory)")
    args = parser.parse_args(argv)
    out = write_comparison(args.experiment, args.out or Path.cwd() / comparison_name(args.experiment))
    print(f"comparison page: {out.resolve()}")


if __name__ == "__main__":
    main()
