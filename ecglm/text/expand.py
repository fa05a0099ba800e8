"""`ecglm expand`: the templated text-ECG training samples, with the lead-drop expansion, as Parquet shards.

Per ECG of records.parquet: the original 12-lead sample (copy 0, ``dropped_k`` 0) and, in the training
split only, ``copies`` expanded samples, each dropping k leads (k drawn uniformly from ``drop_k``) from
the text AND the signal (through a 12-value lead mask), chosen by :func:`choose_dropped_leads`.

Output (``DIR`` = ``--out``), swapped in as a whole only once complete::

    DIR/train/part-00000.parquet ...   rows: sample_id, ecg_id, signal_row, split, copy, dropped_k,
    DIR/val/part-00000.parquet ...           lead_mask, text, target_spans (see SCHEMA)
    DIR/test/part-00000.parquet ...
    DIR/manifest.json                  counts per split, seed, copies, drop_k, shard files
    DIR/skipped.csv                    ecg_id,reason of ECGs left out with --skip-missing (header only if none)

Every split has at least one shard (an empty one when it has no ECG), so
``polars.scan_parquet("DIR/{split}/*.parquet")`` always works. Rows are in records.parquet order,
each original followed by its copies; shuffling is the data loader's job.

Reproducibility: each ECG's copies come from its own generator seeded by (seed, ecg_id), so the output
does not depend on shard size, on the order of records, or on which other ECGs are present.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ecglm.core.atomic import atomic_path, staged_folder, write_text_atomic
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS, N_LEADS
from ecglm.text.prompts import Patient, clean_phrase, training_text

if TYPE_CHECKING:  # polars is imported where it is used (a fast `ecglm --help`)
    import polars as pl

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Mixed into every per-ECG seed so that this stage's random stream differs from other stages' with the same seed.
_STAGE_KEY = 0x657870616E64  # "expand"
#: Largest k: at least one lead always stays.
MAX_DROP = N_LEADS - 1



def schema() -> dict[str, pl.DataType]:
    """The columns of the pairs shards and their types (also ``SCHEMA``; spans: ``SPAN_DTYPE``)."""
    import polars as pl

    span = pl.Struct({"start": pl.Int32, "end": pl.Int32, "kind": pl.String})
    return {
        "sample_id": pl.String,  # "{ecg_id:05d}-c{copy}"
        "ecg_id": pl.Int32,
        "signal_row": pl.Int32,  # row of signals_{fs}.npy (= row of records.parquet)
        "split": pl.String,
        "copy": pl.Int16,  # 0 = the original sample
        "dropped_k": pl.Int8,
        "lead_mask": pl.Array(pl.Boolean, N_LEADS),  # LEADS order, True = lead kept
        "text": pl.String,
        "target_spans": pl.List(span),  # character spans of the loss targets
    }


def __getattr__(name: str):  # SCHEMA and SPAN_DTYPE, built when first asked for (polars not imported before)
    if name == "SCHEMA":
        return schema()
    if name == "SPAN_DTYPE":
        return schema()["target_spans"].inner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


LEAD_COLUMNS = tuple(f"lead_{lead}" for lead in LEADS)
RECORD_COLUMNS = ("ecg_id", "age", "age_over_89", "sex", "height", "weight", "split")
REPORT_COLUMNS = ("ecg_id", "report_en")
FINDINGS_COLUMNS = ("ecg_id", "general", *LEAD_COLUMNS)


# --------------------------------------------------------------------------------------------- drop rule


def ecg_rng(seed: int, ecg_id: int) -> np.random.Generator:
    """The generator of one ECG's expansion: a function of (seed, ecg_id) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(ecg_id), _STAGE_KEY]))


def choose_dropped_leads(described: Sequence[bool], k: int, rng: np.random.Generator) -> tuple[int, ...]:
    """Choose the k leads to drop; returns their sorted indices into ``LEADS``.

    ``described[i]`` says whether lead i carries a description. With d described leads:
    - d = 0: any k of the 12 leads, uniformly;
    - d >= 1: m = min(k, d - 1) described leads (uniformly among them) and k - m undescribed ones
      (uniformly among those). So described leads are dropped first, as many as possible while at
      least one described lead is always kept, and undescribed leads only fill up the rest.
    Guarantees: exactly k distinct indices; when d >= 1 at least one described lead is kept.
    """
    described = np.asarray(described, dtype=bool)
    if described.shape != (N_LEADS,):
        raise ValueError(f"described must have {N_LEADS} values, got shape {described.shape}")
    if not 0 <= k <= MAX_DROP:
        raise ValueError(f"k must be in 0..{MAX_DROP}, got {k}")
    on = np.flatnonzero(described)
    off = np.flatnonzero(~described)
    if on.size == 0:
        chosen = rng.choice(N_LEADS, size=k, replace=False)
    else:
        m = min(k, on.size - 1)
        chosen = np.concatenate([rng.choice(on, size=m, replace=False), rng.choice(off, size=k - m, replace=False)])
    return tuple(sorted(int(i) for i in chosen))


def lead_mask(dropped: Iterable[int]) -> list[bool]:
    """The 12-value mask in ``LEADS`` order: True = kept, False = dropped."""
    mask = [True] * N_LEADS
    for i in dropped:
        mask[i] = False
    return mask


@dataclass(frozen=True)
class Expansion:
    """How many expanded copies each training ECG gets, and the k values they draw from."""

    copies: int = 3
    drop_k: tuple[int, ...] = (4, 5, 6)

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise StageError(f"--copies must be >= 0, got {self.copies}")
        if not self.drop_k:
            raise StageError("--drop-k needs at least one value")
        bad = [k for k in self.drop_k if not 0 <= k <= MAX_DROP]
        if bad:
            raise StageError(f"--drop-k values must be in 0..{MAX_DROP} (one lead always stays), got {bad}")
        if len(set(self.drop_k)) != len(self.drop_k):
            raise StageError(f"--drop-k values must be distinct, got {list(self.drop_k)}")
        if 0 in self.drop_k and len(self.drop_k) > 1:
            raise StageError("--drop-k 0 means no expansion and cannot be combined with other values "
                             f"(a k = 0 copy would repeat the original), got {list(self.drop_k)}")

    @property
    def enabled(self) -> bool:
        return self.copies > 0 and self.drop_k != (0,)

    def plan(self, seed: int, ecg_id: int, described: Sequence[bool]) -> list[tuple[int, ...]]:
        """The dropped lead indices of each expanded copy (copy c = element c - 1); [] when disabled."""
        if not self.enabled:
            return []
        rng = ecg_rng(seed, ecg_id)
        plan = []
        for _ in range(self.copies):
            k = self.drop_k[int(rng.integers(len(self.drop_k)))]
            plan.append(choose_dropped_leads(described, k, rng))
        return plan


# ---------------------------------------------------------------------------------------------- samples


def sample_rows(row: dict, expansion: Expansion, seed: int) -> list[dict]:
    """The output rows (SCHEMA) of one ECG: the original and, in the training split only, its copies.

    ``row`` holds the columns of :func:`load_inputs` (RECORD_COLUMNS, signal_row, report, general,
    lead_I..lead_V6).
    """
    ecg_id, split, signal_row = int(row["ecg_id"]), row["split"], int(row["signal_row"])
    patient = Patient.from_record(row)
    leads = {lead: row.get(col) for lead, col in zip(LEADS, LEAD_COLUMNS)}
    described = [bool(clean_phrase(leads[lead])) for lead in LEADS]
    plans: list[tuple[int, ...]] = [()]
    if split == "train":
        plans += expansion.plan(seed, ecg_id, described)
    out = []
    for copy, dropped in enumerate(plans):
        mask = lead_mask(dropped)
        sample = training_text(patient, row["report"], row.get("general"), leads, mask)
        out.append({
            "sample_id": f"{ecg_id:05d}-c{copy}",
            "ecg_id": ecg_id,
            "signal_row": signal_row,
            "split": split,
            "copy": copy,
            "dropped_k": len(dropped),
            "lead_mask": mask,
            "text": sample.text,
            "target_spans": [{"start": s.start, "end": s.end, "kind": s.kind} for s in sample.spans],
        })
    return out


class ShardWriter:
    """Writes one split's rows as ``part-NNNNN.parquet`` shards of at most ``shard_rows`` rows.

    Guarantees: every row written carries an ecg_id of ``allowed_ids`` and this writer's split (checked
    before each shard is written; a violation raises StageError and writes nothing); each shard is
    written atomically; :meth:`close` leaves at least one (possibly empty) shard.
    """

    def __init__(self, folder: Path, split: str, shard_rows: int, allowed_ids: set[int]):
        self.folder = folder
        self.split = split
        self.shard_rows = shard_rows
        self.allowed_ids = allowed_ids
        self.buffer: list[dict] = []
        self.files: list[Path] = []
        self.rows = 0

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self.buffer.append(r)
            if len(self.buffer) >= self.shard_rows:
                self._flush()

    def close(self) -> list[Path]:
        if self.buffer or not self.files:
            self._flush()
        return self.files

    def _flush(self) -> None:
        import polars as pl

        foreign = sorted({r["ecg_id"] for r in self.buffer if r["ecg_id"] not in self.allowed_ids or r["split"] != self.split})
        if foreign:
            raise StageError(
                f"refusing to write ECGs {_id_list(foreign)} into the {self.split} shards: they are not in the "
                f"{self.split} split of records.parquet"
            )
        columns = schema()
        frame = pl.DataFrame(
            {name: [r[name] for r in self.buffer] for name in columns}, schema=columns
        )
        path = self.folder / f"part-{len(self.files):05d}.parquet"
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            frame.write_parquet(tmp, statistics=True)
        self.files.append(path)
        self.rows += len(self.buffer)
        self.buffer = []


# ---------------------------------------------------------------------------------------------- inputs


def _id_list(ids: Sequence[int], limit: int = 20) -> str:
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:limit])
    return f"{shown} (and {len(ids) - limit} more)" if len(ids) > limit else shown


def _read(path: Path, columns: Sequence[str], what: str, optional: Sequence[str] = ()) -> pl.DataFrame:
    """Read ``columns`` (and those of ``optional`` it has) of a Parquet file.

    Raises StageError naming the file when it is missing or unreadable or lacks a required column.
    """
    import polars as pl

    if not path.is_file():
        raise StageError(f"{path}: {what} not found")
    try:
        names = pl.scan_parquet(path).collect_schema().names()
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise StageError(f"{path}: cannot read {what} as Parquet ({err})") from err
    missing = [c for c in columns if c not in names]
    if missing:
        raise StageError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
    frame = pl.read_parquet(path, columns=[*columns, *(c for c in optional if c in names)])
    return frame.with_columns(pl.col("ecg_id").cast(pl.Int64))


def _unique_ids(frame: pl.DataFrame, path: Path, what: str) -> None:
    import polars as pl

    dup = frame.filter(pl.col("ecg_id").is_duplicated())["ecg_id"].unique().sort().to_list()
    if dup:
        raise StageError(f"{path}: {what} holds ecg_id(s) {_id_list(dup)} more than once")
    if frame["ecg_id"].null_count():
        raise StageError(f"{path}: {what} has rows without an ecg_id")


def training_report(report_en: str | None, edit_note_en: str | None = None) -> str | None:
    """The report text a sample trains on: the English report, with the Edit: note appended when given.

    "sinus rhythm" + "NORM 100, poor quality V2" -> "sinus rhythm. NORM 100, poor quality V2";
    None when the report is missing.
    """
    if report_en is None:
        return None
    base, note = clean_phrase(report_en), clean_phrase(edit_note_en)
    return f"{base}. {note}" if base and note else report_en  # an empty report stays empty (reported missing)


def load_inputs(
    records: Path, reports: Path, findings: Path, *, with_edit_notes: bool = False
) -> pl.DataFrame:
    """records.parquet joined with the English reports and the findings, in records order.

    Adds ``signal_row`` (the row in records.parquet / signals_{fs}.npy), ``report`` (the text to train
    on, see :func:`training_report`; null when missing) and the flags ``_has_report`` / ``_has_findings``;
    keeps ``patient_id`` when records.parquet has it. Raises StageError for a
    missing file or column, a duplicated or missing ecg_id, or a split outside train/val/test.
    """
    import polars as pl

    rec = _read(records, RECORD_COLUMNS, "records", optional=("patient_id",)).with_row_index("signal_row")
    _unique_ids(rec, records, "records")
    bad_split = rec.filter(~pl.col("split").is_in(SPLITS) | pl.col("split").is_null())
    if bad_split.height:
        raise StageError(
            f"{records}: ecg_id(s) {_id_list(bad_split['ecg_id'].to_list())} have a split outside "
            f"{'/'.join(SPLITS)}: {sorted(set(map(str, bad_split['split'].to_list())))}"
        )
    rep_cols = REPORT_COLUMNS + (("edit_note_en",) if with_edit_notes else ())
    rep = _read(reports, rep_cols, "English reports")
    _unique_ids(rep, reports, "English reports")
    notes = rep["edit_note_en"] if with_edit_notes else pl.Series([None] * rep.height, dtype=pl.String)
    rep = rep.select(
        "ecg_id",
        pl.Series("report", [training_report(r, n) for r, n in zip(rep["report_en"], notes)], dtype=pl.String),
        pl.lit(True).alias("_has_report"),
    )
    fin = _read(findings, FINDINGS_COLUMNS, "findings")
    _unique_ids(fin, findings, "findings")
    fin = fin.with_columns(pl.lit(True).alias("_has_findings"))
    joined = rec.join(rep, on="ecg_id", how="left").join(fin, on="ecg_id", how="left")
    joined = joined.sort("signal_row").with_columns(
        pl.col("_has_report").fill_null(False), pl.col("_has_findings").fill_null(False)
    )
    return joined


def missing_reasons(joined: pl.DataFrame, reports: Path, findings: Path) -> list[tuple[int, str]]:
    """(ecg_id, reason) of every ECG that cannot become a sample, in records order."""
    out = []
    for ecg_id, has_rep, report, has_fin in joined.select(
        "ecg_id", "_has_report", "report", "_has_findings"
    ).iter_rows():
        if not has_rep:
            out.append((ecg_id, f"no row in {reports.name}"))
        elif not clean_phrase(report):
            out.append((ecg_id, f"empty report_en in {reports.name}"))
        elif not has_fin:
            out.append((ecg_id, f"no row in {findings.name}"))
    return out


def check_split_isolation(joined: pl.DataFrame) -> int:
    """Warn about patients with ECGs in more than one split; returns how many (0 for PTB-XL's folds)."""
    import polars as pl

    if "patient_id" not in joined.columns:
        return 0
    crossing = (
        joined.filter(pl.col("patient_id").is_not_null())
        .group_by("patient_id")
        .agg(pl.col("split").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
    )
    if crossing.height:
        log.warning("%d patient(s) have ECGs in more than one split (e.g. patient_id %s)",
                    crossing.height, _id_list(crossing["patient_id"].sort().to_list(), 5))
    return crossing.height


# ---------------------------------------------------------------------------------------------- the stage


def expand(
    records: str | Path,
    reports: str | Path,
    findings: str | Path,
    out: str | Path,
    *,
    expansion: Expansion = Expansion(),
    shard_rows: int = 50_000,
    seed: int = 1234,
    skip_missing: bool = False,
    with_edit_notes: bool = False,
    progress: bool = True,
) -> dict:
    """Write the sample shards, manifest.json and skipped.csv into ``out``; returns the manifest.

    Nothing appears at ``out`` unless the whole set is complete (built in a temporary sibling folder,
    then swapped in). An ECG without a report or findings raises StageError naming it, or with
    ``skip_missing`` is listed in skipped.csv with the reason.
    """
    import polars as pl
    from tqdm import tqdm

    records, reports, findings, out = Path(records), Path(reports), Path(findings), Path(out)
    if shard_rows < 1:
        raise StageError(f"--shard-rows must be >= 1, got {shard_rows}")
    if seed < 0:
        raise StageError(f"--seed must be >= 0, got {seed}")
    if out.exists() and not out.is_dir():
        raise StageError(f"{out}: exists and is not a folder")
    joined = load_inputs(records, reports, findings, with_edit_notes=with_edit_notes)
    patients_crossing = check_split_isolation(joined)

    missing = missing_reasons(joined, reports, findings)
    if missing and not skip_missing:
        by_reason: dict[str, list[int]] = {}
        for ecg_id, reason in missing:
            by_reason.setdefault(reason, []).append(ecg_id)
        detail = "; ".join(f"{reason}: ecg_id {_id_list(ids)}" for reason, ids in by_reason.items())
        raise StageError(
            f"{len(missing)} ECG(s) of {records} cannot become samples ({detail}); rerun the stage that "
            "writes them, or pass --skip-missing to leave them out (listed in skipped.csv)"
        )
    skipped_ids = {ecg_id for ecg_id, _ in missing}
    if missing:
        log.warning("skipping %d ECG(s) without a report or findings (listed in skipped.csv)", len(missing))

    ids_by_split = {
        split: set(joined.filter(pl.col("split") == split)["ecg_id"].to_list()) for split in SPLITS
    }
    with staged_folder(out) as tmp:
        writers = {s: ShardWriter(tmp / s, s, shard_rows, ids_by_split[s]) for s in SPLITS}
        ecgs: Counter = Counter()
        ks: Counter = Counter()
        rows = joined.filter(~pl.col("ecg_id").is_in(list(skipped_ids))) if skipped_ids else joined
        for row in tqdm(rows.iter_rows(named=True), total=rows.height, desc="expand", unit="ECG",
                        disable=not progress):
            samples = sample_rows(row, expansion, seed)
            writers[row["split"]].add(samples)
            ecgs[row["split"]] += 1
            ks.update(s["dropped_k"] for s in samples[1:])
        shards = {s: [str(p.relative_to(tmp)) for p in w.close()] for s, w in writers.items()}
        with atomic_path(tmp / "skipped.csv") as path, open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["ecg_id", "reason"])
            writer.writerows(missing)
        manifest = {
            "stage": "expand",
            "inputs": {"records": str(records), "reports": str(reports), "findings": str(findings)},
            "seed": seed,
            "copies": expansion.copies,
            "drop_k": list(expansion.drop_k),
            "shard_rows": shard_rows,
            "with_edit_notes": with_edit_notes,
            "counts": {s: {"ecgs": ecgs[s], "samples": writers[s].rows} for s in SPLITS},
            "dropped_k_counts": {str(k): ks[k] for k in sorted(ks)},
            "skipped": len(missing),
            "patients_in_several_splits": patients_crossing,
            "shards": shards,
        }
        write_text_atomic(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    log.info("wrote %s: %s", out, ", ".join(f"{s} {c['samples']} samples of {c['ecgs']} ECGs"
                                            for s, c in manifest["counts"].items()))
    return manifest


def run(args: argparse.Namespace) -> int:
    expand(
        args.records,
        args.reports,
        args.findings,
        args.out,
        expansion=Expansion(copies=args.copies, drop_k=tuple(args.drop_k)),
        shard_rows=args.shard_rows,
        seed=args.seed,
        skip_missing=args.skip_missing,
        with_edit_notes=args.with_edit_notes,
        progress=not args.no_progress,
    )
    return 0


def register(subparsers) -> None:
    """Add the ``expand`` subcommand."""
    p = subparsers.add_parser(
        "expand",
        help="build the templated text-ECG training samples with the lead-drop expansion (Parquet shards)",
        description=(
            "Join records.parquet with the English reports and the per-lead findings, write every ECG's "
            "training text (the paper's template, see ecglm/prompts.py) with the character spans of its "
            "loss targets, and, for the training split only, --copies extra samples that each drop k "
            "leads (k drawn from --drop-k) from the text and, through the lead mask, the signal. Described "
            "leads are dropped first, but one described lead is always kept. Output: OUT/{train,val,test}/"
            "part-NNNNN.parquet, OUT/manifest.json, OUT/skipped.csv; OUT is replaced only once complete."
        ),
    )
    p.add_argument("--records", required=True, type=Path, help="records.parquet written by `ecglm prepare`")
    p.add_argument("--reports", required=True, type=Path, help="reports_en.parquet written by `ecglm translate`")
    p.add_argument("--findings", required=True, type=Path, help="findings.parquet written by `ecglm describe`")
    p.add_argument("--out", required=True, type=Path, help="output folder (replaced as a whole)")
    p.add_argument("--copies", type=int, default=3,
                   help="expanded copies per training ECG; 0 = no expansion (default: %(default)s)")
    p.add_argument("--drop-k", type=int, nargs="+", default=[4, 5, 6], metavar="K",
                   help="numbers of leads a copy may drop, drawn uniformly; 0 alone = no expansion "
                        "(default: 4 5 6)")
    p.add_argument("--shard-rows", type=int, default=50_000, help="rows per Parquet shard (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1234,
                   help="seed; each ECG's copies depend only on (seed, ecg_id) (default: %(default)s)")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out ECGs without a report or findings and list them in OUT/skipped.csv "
                        "(default: stop with their ecg_ids)")
    p.add_argument("--with-edit-notes", action="store_true",
                   help="append the cardiologist's translated Edit: note (edit_note_en) to the training report "
                        "(default: left out, as in the paper)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
