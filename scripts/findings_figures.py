"""Print, per rhythm label and for long QT, the share of records described with the matching finding.

    python scripts/findings_figures.py results/demo          # after `snakemake --cores 2`
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from ecglm.text.finding_agreement import finding_agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a run's results folder (holding data/ and text/)")
    args = parser.parse_args()
    records = pl.read_parquet(args.results / "data" / "records.parquet")
    findings = pl.read_parquet(args.results / "text" / "findings.parquet")
    table = finding_agreement(records, findings)
    print(f"{'label':<7} {'finding':<22} {'n':>5} {'described':>9} {'share':>7}")
    for row in table.iter_rows(named=True):
        share = "-" if row["share"] is None else f"{row['share']:.1%}"
        print(f"{row['label']:<7} {row['finding']:<22} {row['n']:>5} {row['described']:>9} {share:>7}")


if __name__ == "__main__":
    main()
