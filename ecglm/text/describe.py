"""`ecglm describe`: per-lead and general findings from 12SL features and the guideline rules.

The engine is vectorised: every rule becomes polars expressions evaluated over the whole table at
once (no Python loop over rows). Rule semantics are documented in :mod:`ecglm.text.guidelines`.

Output (one row per ECG): ``ecg_id`` (Int32), ``general`` and ``lead_I`` ... ``lead_V6`` (String, the
phrases joined with ", ", null when nothing was found) and ``findings`` (List(String), the finding ids
that fired). Each phrase and finding id is written once, at the place where it first appears in the
rule list (rules in file order, a rule's below levels, above levels, then within), so that the
order is the same for every ECG.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from ecglm.core.atomic import atomic_path
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.data.ecg_data import read_records
from ecglm.text.guidelines import (
    DEFAULT_GUIDELINES,
    DERIVED_GLOBAL,
    DERIVED_PER_LEAD,
    GLOBAL_COLUMNS,
    KNOWN_COLUMNS,
    LIMB_LEADS,
    PRECORDIAL_LEADS,
    Contiguous,
    Gate,
    Guidelines,
    Level,
    Rule,
    ThresholdCase,
    load_guidelines,
)

if TYPE_CHECKING:  # polars is imported where it is used (a fast `ecglm --help`)
    import polars as pl

log = logging.getLogger(__name__)

KEY = "ecg_id"
LEAD_COLUMNS_OUT: tuple[str, ...] = tuple(f"lead_{lead}" for lead in LEADS)


def output_schema() -> dict[str, pl.DataType]:
    """The columns of findings.parquet and their types (also ``OUTPUT_SCHEMA``)."""
    import polars as pl

    return {
        KEY: pl.Int32(),
        "general": pl.String(),
        **{c: pl.String() for c in LEAD_COLUMNS_OUT},
        "findings": pl.List(pl.String()),
    }


def __getattr__(name: str):  # OUTPUT_SCHEMA, built when first asked for (polars is not imported before)
    if name == "OUTPUT_SCHEMA":
        return output_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_SEX = "__sex"
_AGE = "__age"
# A patient recorded only as "over 89" (PTB-XL's age 300) is at least this old.
AGE_OVER_89 = 90


# ------------------------------------------------------------------------------------ feature values


def is_angle(column: str) -> bool:
    return "_Axis" in column


def column_value(name: str) -> pl.Expr:
    """A raw 12SL column as Float64, NaN read as null; angles mapped into (-180, 180] degrees."""
    import polars as pl

    e = pl.col(name).cast(pl.Float64).fill_nan(None)
    if is_angle(name):
        e = e - 360.0 * ((e - 180.0) / 360.0).ceil()
    return e


def _all_known(exprs: Iterable[pl.Expr]) -> pl.Expr:
    import polars as pl

    return pl.all_horizontal([e.is_not_null() for e in exprs])


def _guard(inputs: Sequence[pl.Expr], value: pl.Expr) -> pl.Expr:
    """``value`` where every input is known, else null (a derived feature with a null input is null)."""
    import polars as pl

    return pl.when(_all_known(inputs)).then(value).otherwise(None)


def _qrs_pp(lead: str) -> pl.Expr:
    import polars as pl

    r, q, s = (column_value(f"{w}_Amp_{lead}") for w in ("R", "Q", "S"))
    # [N] mV: positive peak (R, floored at 0) + deepest negative deflection (Q or S, floored at 0)
    return _guard([r, q, s], r.clip(lower_bound=0.0) + pl.max_horizontal(-q, -s, pl.lit(0.0)))


def _max_pp(leads: Sequence[str]) -> pl.Expr:
    import polars as pl

    pps = [_qrs_pp(lead) for lead in leads]
    return _guard(pps, pl.max_horizontal(pps))


def derived_value(name: str) -> pl.Expr:
    """The expression of a derived feature (definitions listed in ecglm.text.guidelines)."""
    import polars as pl

    if name == "sokolow_lyon":
        s1, r5, r6 = column_value("S_Amp_V1"), column_value("R_Amp_V5"), column_value("R_Amp_V6")
        return _guard([s1, r5, r6], s1.abs() + pl.max_horizontal(r5, r6))
    if name == "cornell_voltage":
        ravl, s3 = column_value("R_Amp_aVL"), column_value("S_Amp_V3")
        return _guard([ravl, s3], ravl + s3.abs())
    if name == "rr_cv":
        sd, mean = column_value("RR_SDNN_Global"), column_value("RR_Mean_Global")
        return pl.when(mean > 0).then(sd / mean).otherwise(None)
    if name == "limb_qrs_max_pp":
        return _max_pp(LIMB_LEADS)
    if name == "precordial_qrs_max_pp":
        return _max_pp(PRECORDIAL_LEADS)
    for lead in LEADS:
        if name == f"qrs_pp_{lead}":
            return _qrs_pp(lead)
        if name == f"qrs_net_{lead}":
            return column_value(f"R_Amp_{lead}") + column_value(f"Q_Amp_{lead}") + column_value(f"S_Amp_{lead}")
        if name == f"q_r_ratio_{lead}":
            q, r = column_value(f"Q_Amp_{lead}"), column_value(f"R_Amp_{lead}")
            return pl.when(r > 0).then(q.abs() / r).otherwise(None)
        if name == f"st_rise_{lead}":
            return column_value(f"ST60_Amp_{lead}") - column_value(f"ST_Amp_{lead}")
    raise KeyError(name)  # pragma: no cover - guidelines validation rejects unknown features


assert set(DERIVED_GLOBAL) | set(DERIVED_PER_LEAD) == {
    "sokolow_lyon", "cornell_voltage", "rr_cv", "limb_qrs_max_pp", "precordial_qrs_max_pp",
    "qrs_pp_{lead}", "qrs_net_{lead}", "q_r_ratio_{lead}", "st_rise_{lead}",
}, "every derived feature named in ecglm.text.guidelines has an expression here"


def feature_value(name: str) -> pl.Expr:
    return column_value(name) if name in KNOWN_COLUMNS else derived_value(name)


# ------------------------------------------------------------------------------------ conditions


def _compare(value: pl.Expr, op: str, threshold: float) -> pl.Expr:
    import polars as pl

    t = pl.lit(threshold, dtype=pl.Float64)
    return {"lt": value < t, "le": value <= t, "gt": value > t, "ge": value >= t}[op]


def _possible(case: ThresholdCase) -> pl.Expr:
    """True where the patient may belong to ``case`` (unknown sex or age matches every case)."""
    import polars as pl

    e = pl.lit(True)
    sex, age = pl.col(_SEX), pl.col(_AGE)
    if case.sex is not None:
        e = e & (sex.is_null() | (sex == case.sex))
    if case.age_min is not None:
        e = e & (age.is_null() | (age >= case.age_min))
    if case.age_max is not None:
        e = e & (age.is_null() | (age <= case.age_max))
    return e


def certainly(value: pl.Expr, level: Level) -> pl.Expr:
    """True where the level holds for every threshold case the patient may belong to (never null)."""
    import polars as pl

    constant = level.threshold.constant
    if constant is not None:
        return _compare(value, level.op, constant).fill_null(False)
    held = [~_possible(c) | _compare(value, level.op, c.value) for c in level.threshold.cases]
    return (value.is_not_null() & pl.all_horizontal(held)).fill_null(False)


def possibly(value: pl.Expr, level: Level) -> pl.Expr:
    """True where the level holds for some threshold case the patient may belong to (never null)."""
    import polars as pl

    constant = level.threshold.constant
    if constant is not None:
        return _compare(value, level.op, constant).fill_null(False)
    held = [_possible(c) & _compare(value, level.op, c.value) for c in level.threshold.cases]
    return pl.any_horizontal(held).fill_null(False)


def _gates(gates: Sequence[Gate], names: Sequence[str], value_of: Callable[[str], pl.Expr]) -> pl.Expr:
    import polars as pl

    e = pl.lit(True)
    for gate, name in zip(gates, names):
        e = e & _compare(value_of(name), gate.op, gate.value).fill_null(gate.null_passes)
    return e


@dataclass(frozen=True)
class Emission:
    """One thing a rule may write: ``words`` into ``column`` and ``finding`` into findings, where ``cond``."""

    column: str  # "general" or "lead_<lead>"
    finding: str
    words: str
    cond: pl.Expr
    # a finding that needs contiguous leads: this per-lead emission writes only its words; the
    # finding id and its general words come from ``contiguous_conditions``
    contiguous: Contiguous | None = None


def rule_emissions(
    rule: Rule, lead: str | None, value_of: Callable[[str], pl.Expr] = feature_value
) -> list[Emission]:
    """The emissions of ``rule`` in ``lead`` (None: global): graded levels keep only the most extreme.

    ``value_of`` maps a concrete feature name to its expression (default: computed from the raw columns).
    """
    value = value_of(rule.feature_name(lead))
    gate = _gates(rule.when, rule.gate_features(lead), value_of)
    column = "general" if lead is None else f"lead_{lead}"
    out: list[Emission] = []
    for side in (rule.below, rule.above):
        held = [certainly(value, level) for level in side]
        for i, level in enumerate(side):
            cond = gate & held[i]
            if i + 1 < len(side):
                cond = cond & ~held[i + 1]
            out.append(Emission(column, level.finding, level.words, cond, rule.contiguous if lead else None))
    if rule.within is not None:
        cond = gate & value.is_not_null()
        for side in (rule.below, rule.above):
            if side:
                cond = cond & ~possibly(value, side[0])
        out.append(Emission(column, rule.within.finding, rule.within.words, cond))
    return out


def contiguous_condition(spec: Contiguous, lead_conds: dict[str, list[pl.Expr]]) -> pl.Expr:
    """True where the level holds in at least ``spec.min_leads`` leads of one of ``spec.groups``.

    ``lead_conds``: lead -> the conditions under which the finding's level holds in that lead (any of them).
    """
    import polars as pl

    def holds(lead: str) -> pl.Expr:
        import polars as pl

        conds = lead_conds.get(lead)
        return pl.any_horizontal(conds).fill_null(False).cast(pl.Int32) if conds else pl.lit(0, dtype=pl.Int32)

    return pl.any_horizontal([pl.sum_horizontal([holds(lead) for lead in group]) >= spec.min_leads
                              for group in spec.groups])


# ------------------------------------------------------------------------------------ planning


@dataclass
class Plan:
    """Which (rule, lead) pairs can run on the available columns, and what is missing."""

    runnable: list[tuple[Rule, str | None]] = field(default_factory=list)
    # missing column -> the "rule" / "rule@lead" names it disables
    missing: dict[str, list[str]] = field(default_factory=dict)

    @property
    def skipped(self) -> list[str]:
        """The skipped rules, each with the leads it was skipped in: ``["qrs_duration", "st_elevation (V5, V6)"]``."""
        leads: dict[str, list[str]] = {}
        for names in self.missing.values():
            for name in names:
                rule, _, lead = name.partition("@")
                got = leads.setdefault(rule, [])
                if lead and lead not in got:
                    got.append(lead)
        return [
            rule if not ls else f"{rule} ({', '.join(sorted(ls, key=LEADS.index))})"
            for rule, ls in sorted(leads.items())
        ]


def plan_rules(guidelines: Guidelines | Sequence[Rule], columns: Iterable[str]) -> Plan:
    """Split the rules into those whose inputs are present and those skipped for missing columns."""
    rules = guidelines.rules if isinstance(guidelines, Guidelines) else tuple(guidelines)
    have = set(columns)
    plan = Plan()
    for rule in rules:
        for lead in rule.scopes():
            absent = [c for c in rule.input_columns(lead) if c not in have]
            if absent:
                name = rule.id if lead is None else f"{rule.id}@{lead}"
                for c in absent:
                    plan.missing.setdefault(c, []).append(name)
            else:
                plan.runnable.append((rule, lead))
    return plan


def log_missing(plan: Plan, source: str = "features") -> None:
    if not plan.missing:
        return
    cols = sorted(plan.missing)
    log.warning(
        "%s: %d column(s) the guidelines use are missing: %s; rules skipped: %s",
        source, len(cols), ", ".join(cols), ", ".join(plan.skipped),
    )


# ------------------------------------------------------------------------------------ the engine


def _prepare_patients(patients: pl.DataFrame) -> pl.DataFrame:
    """ecg_id, __sex ('male'/'female'/null), __age (years or null; 'over 89' read as 90)."""
    import polars as pl

    for col in (KEY, "sex", "age"):
        if col not in patients.columns:
            raise StageError(f"patient table has no {col!r} column (columns: {', '.join(patients.columns)})")
    sex = pl.col("sex").cast(pl.String).str.strip_chars().str.to_lowercase()
    bad = patients.select(sex.alias("s")).filter(pl.col("s").is_not_null() & ~pl.col("s").is_in(["male", "female"]))
    if bad.height:
        values = sorted(set(bad["s"].to_list()))[:5]
        raise StageError(f"patient table: sex must be 'male', 'female' or null, found {values}")
    age = pl.col("age").cast(pl.Float64).fill_nan(None)
    if "age_over_89" in patients.columns:
        age = pl.when(age.is_null() & pl.col("age_over_89").fill_null(False)).then(pl.lit(float(AGE_OVER_89))).otherwise(age)
    out = patients.select(pl.col(KEY).cast(pl.Int64), sex.alias(_SEX), age.alias(_AGE))
    dup = out.filter(pl.col(KEY).is_duplicated())
    if dup.height:
        raise StageError(f"patient table: ecg_id {dup[KEY][0]} appears more than once")
    return out


def _merge_same(items: Sequence[tuple[str, pl.Expr]]) -> list[tuple[str, pl.Expr]]:
    """Merge items with the same text into one, at its first position, firing where any of them fires.

    This is how a phrase or finding id is written once however many rules produce it.
    """


    merged: dict[str, pl.Expr] = {}
    for text, cond in items:
        merged[text] = merged[text] | cond if text in merged else cond
    return list(merged.items())


def _phrase(items: Sequence[tuple[str, pl.Expr]]) -> pl.Expr:
    """The words whose conditions hold, joined with ", " in order; null when none holds."""
    import polars as pl

    if not items:
        return pl.lit(None, dtype=pl.String)
    parts = [pl.when(cond).then(pl.lit(words)).otherwise(None) for words, cond in _merge_same(items)]
    joined = pl.concat_str(parts, separator=", ", ignore_nulls=True)
    return pl.when(joined != "").then(joined).otherwise(None)


def describe(
    features: pl.DataFrame,
    patients: pl.DataFrame,
    rules: Guidelines | Sequence[Rule],
    *,
    source: str = "features",
) -> pl.DataFrame:
    """Apply the guideline rules to every row of ``features``.

    ``features``: ``ecg_id`` and 12SL columns in any order, rows in any order; extra columns are
    ignored. ``patients``: ``ecg_id``, ``sex`` ('male'/'female'/null), ``age`` (years or null) and
    optionally ``age_over_89``; a feature row without a patient row is described with sex and age
    unknown. Rules whose columns are missing are skipped with a logged warning.

    Returns one row per feature row, in input order, with the columns of ``OUTPUT_SCHEMA``: the
    general and per-lead phrases (null when nothing fired) and the finding ids. A null feature value
    never produces a finding.
    """
    import polars as pl

    if KEY not in features.columns:
        raise StageError(f"{source}: no {KEY!r} column (columns: {', '.join(features.columns[:10])} ...)")
    plan = plan_rules(rules, features.columns)
    log_missing(plan, source)
    used = sorted({c for rule, lead in plan.runnable for c in rule.input_columns(lead)})
    frame = features.select(pl.col(KEY).cast(pl.Int64), *used)
    dup = frame.filter(pl.col(KEY).is_duplicated())
    if dup.height:
        raise StageError(f"{source}: ecg_id {dup[KEY][0]} has more than one feature row")
    frame = frame.join(_prepare_patients(patients), on=KEY, how="left", maintain_order="left")

    # every feature (raw or derived) is computed once, into a Float64 column [N]
    names = list(dict.fromkeys(
        n for rule, lead in plan.runnable for n in (rule.feature_name(lead), *rule.gate_features(lead))
    ))
    slot = {n: f"__f{i}" for i, n in enumerate(names)}
    frame = frame.with_columns([feature_value(n).alias(slot[n]) for n in names])
    emissions: list[Emission] = [
        e for rule, lead in plan.runnable for e in rule_emissions(rule, lead, lambda n: pl.col(slot[n]))
    ]
    # every condition is evaluated once, into a boolean column [N]
    frame = frame.with_columns([e.cond.alias(f"__c{i}") for i, e in enumerate(emissions)])
    by_column: dict[str, list[tuple[str, pl.Expr]]] = {c: [] for c in ("general", *LEAD_COLUMNS_OUT)}
    finding_items: list[tuple[str, pl.Expr]] = []
    # findings that need contiguous leads: the leads' conditions, pooled over the rules that write them
    pooled: dict[str, dict[str, list[pl.Expr]]] = {}
    for i, e in enumerate(emissions):
        if e.contiguous is not None:
            pooled.setdefault(e.finding, {}).setdefault(e.column.removeprefix("lead_"), []).append(pl.col(f"__c{i}"))
    placed: set[str] = set()
    for i, e in enumerate(emissions):
        by_column[e.column].append((e.words, pl.col(f"__c{i}")))
        if e.contiguous is None:
            finding_items.append((e.finding, pl.col(f"__c{i}")))
        elif e.finding not in placed:  # the finding and its general words sit where the finding first appears
            placed.add(e.finding)
            cond = contiguous_condition(e.contiguous, pooled[e.finding])
            by_column["general"].append((e.words, cond))
            finding_items.append((e.finding, cond))
    # finding ids are [A-Za-z0-9_] (validated), so joining with "," and splitting is lossless and much
    # faster in polars than concat_list of conditional literals
    empty = pl.lit([], dtype=pl.List(pl.String))
    findings = empty
    if finding_items:
        ids = pl.concat_str(
            [pl.when(c).then(pl.lit(f)).otherwise(None) for f, c in _merge_same(finding_items)],
            separator=",", ignore_nulls=True,
        )
        findings = pl.when(ids != "").then(ids.str.split(",")).otherwise(empty)
    return frame.select(
        pl.col(KEY).cast(pl.Int32),
        *[_phrase(items).cast(pl.String).alias(col) for col, items in by_column.items()],
        findings.cast(pl.List(pl.String)).alias("findings"),
    )


# ------------------------------------------------------------------------------------ reading features


@dataclass(frozen=True)
class UnitCheck:
    """The plausible range of a column's typical value (median of its non-zero |values|) in its unit."""

    unit: str
    low: float
    high: float


def unit_check(column: str) -> UnitCheck | None:
    """The unit sanity check that applies to a known 12SL column (None: checked as an angle or not at all)."""
    if column == "HR__Global":
        return UnitCheck("bpm", 20, 300)
    if column == "RR_Mean_Global":
        return UnitCheck("ms", 200, 3000)
    if column == "RR_SDNN_Global":
        return UnitCheck("ms", 1, 1000)
    if column in GLOBAL_COLUMNS and not is_angle(column):
        return UnitCheck("ms", 20, 1000)
    base = column.rsplit("_", 1)[0]
    if base.endswith("_Dur"):
        return UnitCheck("ms", 2, 300)
    amp_high = {"P_Amp": 2, "Q_Amp": 5, "R_Amp": 10, "S_Amp": 10, "T_Amp": 5, "ST_Amp": 5, "ST60_Amp": 5}
    if base in amp_high:
        return UnitCheck("mV", 0.002, amp_high[base])
    return None


MIN_VALUES_FOR_UNIT_CHECK = 5


def check_units(frame: pl.DataFrame, source: str) -> None:
    """Raise StageError naming the column when a column is clearly not in ms / mV / bpm / degrees."""
    import polars as pl

    for column in frame.columns:
        if column not in KNOWN_COLUMNS:
            continue
        values = frame[column].cast(pl.Float64).fill_nan(None).drop_nulls()
        if is_angle(column):
            if values.len() and values.abs().max() > 360:
                raise StageError(
                    f"{source}: column {column} does not look like degrees (|value| up to {values.abs().max():.4g}, "
                    "expected within 360)"
                )
            continue
        check = unit_check(column)
        nonzero = values.abs().filter(values.abs() > 0)
        if check is None or nonzero.len() < MIN_VALUES_FOR_UNIT_CHECK:
            continue
        median = float(nonzero.median())
        if not check.low <= median <= check.high:
            raise StageError(
                f"{source}: column {column} does not look like {check.unit}: the median of its non-zero values is "
                f"{median:.4g}, expected {check.low:g}-{check.high:g} {check.unit} (PTB-XL+ 12SL features are in "
                "ms, mV, bpm and degrees)"
            )


def _header(path: Path) -> list[str]:
    import polars as pl

    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return list(pl.read_parquet_schema(path))
        if path.suffix.lower() == ".csv" or suffixes == ".csv.gz":
            return pl.read_csv(path, n_rows=0, infer_schema=False).columns
    except (OSError, pl.exceptions.PolarsError) as err:
        raise StageError(f"{path}: cannot read the feature table ({err})") from err
    raise StageError(f"{path}: feature tables must be .csv or .parquet")


def _parse_numbers(frame: pl.DataFrame, columns: Sequence[str], path: Path) -> pl.DataFrame:
    """Cast text columns to Float64; a non-empty cell that is not a number is an error naming it."""
    import polars as pl

    exprs = []
    for c in columns:
        if frame.schema[c] == pl.String:
            text = pl.col(c).str.strip_chars()
            parsed = text.cast(pl.Float64, strict=False)
            bad = frame.filter(text.is_not_null() & (text != "") & parsed.is_null())
            if bad.height:
                raise StageError(
                    f"{path}: column {c} holds {bad[c][0]!r} (ecg_id {bad[KEY][0]}), which is not a number"
                )
            exprs.append(parsed.alias(c))
        elif frame.schema[c].is_numeric():
            exprs.append(pl.col(c).cast(pl.Float64))
        else:
            raise StageError(f"{path}: column {c} has type {frame.schema[c]}, expected numbers")
    return frame.with_columns(exprs) if exprs else frame


def read_feature_table(path: str | Path, wanted: Iterable[str] | None = None) -> pl.DataFrame:
    """Read ``ecg_id`` and the known 12SL columns present in one CSV or Parquet feature table.

    Columns are found by name wherever they sit (extras ignored, names stripped of spaces); empty
    cells and NaN become null; ``ecg_id`` must be a whole number, unique per row. Values are checked
    to be in ms / mV / bpm / degrees (StageError naming the column otherwise).
    """
    import polars as pl

    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: feature table not found")
    header = _header(path)
    stripped = {name.strip(): name for name in header}
    if KEY not in stripped:
        raise StageError(f"{path}: no {KEY!r} column among its {len(header)} columns")
    wanted_set = set(KNOWN_COLUMNS if wanted is None else wanted) & KNOWN_COLUMNS
    present = [stripped[n] for n in stripped if n in wanted_set]
    selected = [stripped[KEY], *present]
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pl.read_parquet(path, columns=selected)
        else:
            frame = pl.read_csv(path, columns=selected, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise StageError(f"{path}: cannot read the feature table ({err})") from err
    frame = frame.rename({name: name.strip() for name in frame.columns})
    frame = _parse_numbers(frame, [KEY], path)
    ids = frame[KEY]
    if ids.null_count():
        raise StageError(f"{path}: {ids.null_count()} row(s) have no ecg_id")
    if (ids != ids.round()).any():
        raise StageError(f"{path}: ecg_id {ids.filter(ids != ids.round())[0]} is not a whole number")
    frame = frame.with_columns(pl.col(KEY).cast(pl.Int64))
    dup = frame.filter(pl.col(KEY).is_duplicated())
    if dup.height:
        raise StageError(f"{path}: ecg_id {dup[KEY][0]} has more than one row")
    frame = _parse_numbers(frame, [c for c in frame.columns if c != KEY], path)
    frame = frame.with_columns([pl.col(c).fill_nan(None) for c in frame.columns if c != KEY])
    check_units(frame, str(path))
    return frame


def combine_feature_tables(tables: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Merge tables on ecg_id: each cell comes from the first table that has a value for it."""
    import polars as pl

    combined = tables[0]
    for nxt in tables[1:]:
        combined = combined.join(nxt, on=KEY, how="full", coalesce=True, suffix="__next", maintain_order="left_right")
        merged = [c for c in nxt.columns if c != KEY and f"{c}__next" in combined.columns]
        combined = combined.with_columns([pl.coalesce(c, f"{c}__next").alias(c) for c in merged]).drop(
            [f"{c}__next" for c in merged]
        )
    return combined


def missing_features_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.missing_features.csv")


def describe_records(
    feature_paths: Sequence[str | Path],
    records_path: str | Path,
    out: str | Path,
    guidelines_path: str | Path = DEFAULT_GUIDELINES,
) -> pl.DataFrame:
    """The `ecglm describe` stage: findings for every record of records.parquet, written atomically.

    Records with no feature row in any table get all-null findings and are listed, with the reason,
    in ``<out stem>.missing_features.csv`` (always written, header only when none are missing).
    """
    import polars as pl

    guidelines = load_guidelines(guidelines_path)
    wanted = guidelines.required_columns()
    tables = []
    for p in feature_paths:
        t = read_feature_table(p, wanted)
        log.info("%s: %d feature rows, %d of the %d columns the rules use", p, t.height, t.width - 1, len(wanted))
        tables.append(t)
    features = combine_feature_tables(tables)
    records_path = Path(records_path)
    records = read_records(records_path, [KEY])  # with the patient columns it holds
    records = records.select([c for c in (KEY, "sex", "age", "age_over_89") if c in records.columns])
    patients = records.with_columns(pl.col(KEY).cast(pl.Int64))
    sources = ", ".join(str(p) for p in feature_paths)
    described = describe(features.join(patients.select(KEY), on=KEY, how="semi"), patients, guidelines, source=sources)
    extra = features.height - described.height
    if extra:
        log.info("%d feature row(s) belong to no record of %s and are not described", extra, records_path)
    result = (
        patients.select(pl.col(KEY))
        .join(described.with_columns(pl.col(KEY).cast(pl.Int64)), on=KEY, how="left", maintain_order="left")
        .select([pl.col(c).cast(t) for c, t in output_schema().items()])
    )
    missing = patients.select(KEY).join(features.select(KEY), on=KEY, how="anti", maintain_order="left")
    missing = missing.with_columns(pl.lit(f"no feature row in {sources}").alias("reason"))
    if missing.height:
        log.warning(
            "%d record(s) have no feature row and get no findings; listed in %s",
            missing.height, missing_features_path(out),
        )
    with atomic_path(missing_features_path(out)) as tmp:
        missing.write_csv(tmp)
    with atomic_path(out) as tmp:
        result.write_parquet(tmp)
    counts = result.select(pl.col("findings").explode().value_counts(sort=True)).unnest("findings")
    counts = counts.drop_nulls()
    log.info(
        "wrote %s: %d records, %d with a general finding; most frequent: %s",
        out, result.height, result["general"].is_not_null().sum(),
        ", ".join(f"{r['findings']} {r['count']}" for r in counts.head(8).iter_rows(named=True)),
    )
    return result


# ------------------------------------------------------------------------------------ CLI


def run(args: argparse.Namespace) -> int:
    describe_records(args.features, args.records, args.out, args.guidelines)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "describe",
        help="per-lead and general guideline findings from 12SL features",
        description=(
            "Write, for every ECG of records.parquet, the general findings phrase and one description per lead, "
            "by applying the guideline thresholds of --guidelines to the PTB-XL+ 12SL features (or the same columns "
            "measured by `ecglm measure`). Output: a Parquet table with ecg_id, general, lead_I ... lead_V6 and "
            "findings (the finding ids that fired). Records without a feature row get null findings and are listed "
            "in <out stem>.missing_features.csv; rules whose columns are missing are skipped with a warning."
        ),
    )
    p.add_argument(
        "--features", action="append", required=True, type=Path, metavar="FILE",
        help="feature table (.csv or .parquet) with ecg_id and 12SL-named columns; repeat to combine tables, "
        "each cell then comes from the first table that has a value (e.g. PTB-XL+ first, measured second)",
    )
    p.add_argument("--records", required=True, type=Path, help="records.parquet from `ecglm prepare` (ecg_id, sex, age)")
    p.add_argument("--out", required=True, type=Path, help="output findings.parquet (written atomically)")
    p.add_argument(
        "--guidelines", type=Path, default=DEFAULT_GUIDELINES,
        help=f"guideline rules YAML (default: {DEFAULT_GUIDELINES.relative_to(DEFAULT_GUIDELINES.parent.parent)})",
    )
    p.set_defaults(func=run)
