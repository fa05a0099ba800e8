"""Guideline rules: load and validate ecglm/text/guidelines.yaml into typed, immutable rules.

A rule tests one feature -- a 12SL column such as ``HR__Global`` or ``Q_Dur_{lead}``, or a derived
quantity such as ``sokolow_lyon`` -- against thresholds taken from a published guideline, globally
or in each of a list of leads, and names the finding and the words to write when it fires:

    - id: qtc
      feature: QT_IntFramingham_Global
      leads: global
      above: {gt: {male: 450, female: 460}, finding: long_qt, words: prolonged QT interval}
      source: AHA/ACCF/HRS 2009 part IV (Rautaharju et al.)

Semantics (implemented by :mod:`ecglm.text.describe`, documented here because the YAML is read by people):

- ``below`` / ``above``: one level or a list of graded levels, mildest first. A level is one comparison
  (``lt``/``le`` below, ``gt``/``ge`` above) with a threshold, a ``finding`` id and its ``words``. Only
  the most extreme level that holds is written.
- ``within``: an optional finding written when the value is in the normal range (neither side holds).
- A threshold is a number, a ``{male: x, female: y}`` mapping, or a list of cases
  ``{sex, age_min, age_max, value}`` (ages in years, inclusive) that must cover every patient exactly
  once. When a patient's sex or age is unknown, a finding is written only if it holds under every
  case the patient could belong to (the conservative reading: nothing false is said).
- ``when``: gates, each ``{feature, lt|le|gt|ge: number}``; the rule fires only where every gate
  holds on a known value (or on a missing one, for a gate marked ``null_passes: true``).
- A null feature, or a derived feature with a null input, never produces a finding.
- A per-lead feature name holds ``{lead}``; leads are written in ``LEADS`` spelling or as a name from
  ``lead_groups``.
- ``contiguous: {leads: n, groups: [group, ...]}`` (per-lead rules only): each lead's text still says
  what that lead shows, but the finding id, and its words in the general findings, are written only
  where the level holds in at least ``n`` leads of one of the named lead groups (the "two contiguous
  leads" of the MI criteria). Rules that share a finding pool their leads, so they must give the same
  ``contiguous`` and the same words for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS, canonical_lead
from ecglm.core.resources import packaged
from ecglm.data.delineate import GLOBAL_COLUMNS as MEASURED_GLOBALS
from ecglm.data.delineate import LEAD_COLUMNS as MEASURED_PER_LEAD
from ecglm.data.delineate import LEAD_MEASURES

#: The guideline rules shipped in the package (ecglm/text/guidelines.yaml); a user's own file wins.
DEFAULT_GUIDELINES = packaged("ecglm.text", "guidelines.yaml")

# The 12SL columns a rule may name (PTB-XL+ spelling; RR_SDNN_Global comes from `ecglm measure`): the
# globals, and per lead `<base>_<lead>` (amplitudes in mV, Q and S negative, T and ST signed; ST60_Amp, ours, the ST level 60 ms after the J
# point; durations in ms). One list, the measurement's (ecglm.data.delineate), which writes exactly these columns.
GLOBAL_COLUMNS: tuple[str, ...] = MEASURED_GLOBALS
LEAD_BASES: tuple[str, ...] = LEAD_MEASURES
LEAD_COLUMNS: tuple[str, ...] = MEASURED_PER_LEAD
KNOWN_COLUMNS: frozenset[str] = frozenset(GLOBAL_COLUMNS) | frozenset(LEAD_COLUMNS)

LIMB_LEADS: tuple[str, ...] = LEADS[:6]
PRECORDIAL_LEADS: tuple[str, ...] = LEADS[6:]


def _qrs_pp_inputs(lead: str) -> tuple[str, ...]:
    return (f"R_Amp_{lead}", f"Q_Amp_{lead}", f"S_Amp_{lead}")


# Derived features: name -> the 12SL columns it is computed from (``{lead}`` filled per lead).
# Their definitions (the formulas) are in ecglm.text.describe.derived_expr and stated here for readers:
#   sokolow_lyon           |S_Amp_V1| + max(R_Amp_V5, R_Amp_V6)                       mV
#   cornell_voltage        R_Amp_aVL + |S_Amp_V3|                                      mV
#   rr_cv                  RR_SDNN_Global / RR_Mean_Global                             ratio
#   qrs_pp_{lead}          max(R, 0) + max(-Q, -S, 0)   (QRS peak-to-peak)             mV
#   limb_qrs_max_pp        max of qrs_pp over I II III aVR aVL aVF                     mV
#   precordial_qrs_max_pp  max of qrs_pp over V1..V6                                   mV
#   qrs_net_{lead}         R + Q + S (algebraic sum; > 0: QRS mainly upright)           mV
#   q_r_ratio_{lead}       |Q| / R  (null where R <= 0)                                ratio
#   st_rise_{lead}         ST60_Amp - ST_Amp (the ST segment's rise over the 60 ms after J) mV
DERIVED_GLOBAL: dict[str, tuple[str, ...]] = {
    "sokolow_lyon": ("S_Amp_V1", "R_Amp_V5", "R_Amp_V6"),
    "cornell_voltage": ("R_Amp_aVL", "S_Amp_V3"),
    "rr_cv": ("RR_SDNN_Global", "RR_Mean_Global"),
    "limb_qrs_max_pp": tuple(c for lead in LIMB_LEADS for c in _qrs_pp_inputs(lead)),
    "precordial_qrs_max_pp": tuple(c for lead in PRECORDIAL_LEADS for c in _qrs_pp_inputs(lead)),
}
DERIVED_PER_LEAD: dict[str, tuple[str, ...]] = {
    "qrs_pp_{lead}": ("R_Amp_{lead}", "Q_Amp_{lead}", "S_Amp_{lead}"),
    "qrs_net_{lead}": ("R_Amp_{lead}", "Q_Amp_{lead}", "S_Amp_{lead}"),
    "q_r_ratio_{lead}": ("Q_Amp_{lead}", "R_Amp_{lead}"),
    "st_rise_{lead}": ("ST60_Amp_{lead}", "ST_Amp_{lead}"),
}

BELOW_OPS = ("lt", "le")
ABOVE_OPS = ("gt", "ge")
ALL_OPS = BELOW_OPS + ABOVE_OPS
SEXES = ("male", "female")
_AGE_LIMIT = 200  # ages are probed in [0, _AGE_LIMIT] when checking that threshold cases cover everyone


@dataclass(frozen=True)
class ThresholdCase:
    """One threshold value and the patients it is for (None: any sex / no age bound; ages inclusive)."""

    value: float
    sex: str | None = None
    age_min: int | None = None
    age_max: int | None = None

    def matches(self, sex: str, age: int) -> bool:
        return (
            (self.sex is None or self.sex == sex)
            and (self.age_min is None or age >= self.age_min)
            and (self.age_max is None or age <= self.age_max)
        )

    @property
    def unconditional(self) -> bool:
        return self.sex is None and self.age_min is None and self.age_max is None


@dataclass(frozen=True)
class Threshold:
    """A threshold that may depend on sex and age; its cases cover every (sex, age) exactly once."""

    cases: tuple[ThresholdCase, ...]

    @property
    def constant(self) -> float | None:
        """The value when it does not depend on the patient, else None."""
        if len(self.cases) == 1 and self.cases[0].unconditional:
            return self.cases[0].value
        return None

    def value_for(self, sex: str, age: int) -> float:
        """The threshold for a patient of known sex and age."""
        for case in self.cases:
            if case.matches(sex, age):
                return case.value
        raise AssertionError("validated thresholds cover every patient")  # pragma: no cover


@dataclass(frozen=True)
class Level:
    """One finding: fires where ``value <op> threshold`` (op in lt, le, gt, ge)."""

    finding: str
    words: str
    op: str
    threshold: Threshold


@dataclass(frozen=True)
class Within:
    """A finding written where the value is known and lies in the normal range."""

    finding: str
    words: str


@dataclass(frozen=True)
class Gate:
    """A precondition ``feature <op> value``; ``feature`` may hold ``{lead}``.

    A missing value fails the gate unless ``null_passes`` (for "absent" evidence: a P wave that the
    measurement did not find is reported as null).
    """

    feature: str
    op: str
    value: float
    null_passes: bool = False


@dataclass(frozen=True)
class Contiguous:
    """The finding needs its level to hold in at least ``min_leads`` leads of one of ``groups``."""

    min_leads: int
    groups: tuple[tuple[str, ...], ...]  # leads of each group, in LEADS order
    group_names: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    """A validated guideline rule (see the module docstring for its semantics)."""

    id: str
    feature: str
    leads: tuple[str, ...] | None  # None: a global rule, written in the general findings
    below: tuple[Level, ...]  # mildest first
    above: tuple[Level, ...]  # mildest first
    within: Within | None
    when: tuple[Gate, ...]
    source: str
    contiguous: Contiguous | None = None

    @property
    def is_global(self) -> bool:
        return self.leads is None

    def scopes(self) -> tuple[str | None, ...]:
        """The leads the rule is evaluated in, or (None,) for a global rule."""
        return (None,) if self.leads is None else self.leads

    def feature_name(self, lead: str | None) -> str:
        return self.feature if lead is None else self.feature.replace("{lead}", lead)

    def gate_features(self, lead: str | None) -> tuple[str, ...]:
        return tuple(g.feature if lead is None else g.feature.replace("{lead}", lead) for g in self.when)

    def input_columns(self, lead: str | None) -> tuple[str, ...]:
        """The raw 12SL columns the rule needs in ``lead`` (its feature's and its gates' inputs)."""
        names = (self.feature_name(lead),) + self.gate_features(lead)
        out: list[str] = []
        for name in names:
            for col in feature_inputs(name):
                if col not in out:
                    out.append(col)
        return tuple(out)

    def levels(self) -> tuple[Level, ...]:
        return self.below + self.above


@dataclass(frozen=True)
class Guidelines:
    """The validated rules of one guidelines file, in file order."""

    rules: tuple[Rule, ...]
    path: str

    def required_columns(self) -> tuple[str, ...]:
        """Every raw 12SL column some rule needs, in first-use order."""
        out: list[str] = []
        for rule in self.rules:
            for lead in rule.scopes():
                for col in rule.input_columns(lead):
                    if col not in out:
                        out.append(col)
        return tuple(out)


def _derived_template(name: str) -> tuple[str, str | None] | None:
    """(template, lead) when ``name`` is a per-lead derived feature filled for a lead, else None."""
    for template in DERIVED_PER_LEAD:
        prefix = template.replace("{lead}", "")
        if name.startswith(prefix) and name[len(prefix):] in LEADS:
            return template, name[len(prefix):]
    return None


def feature_inputs(name: str) -> tuple[str, ...]:
    """The raw 12SL columns behind a concrete feature name (itself for a column). KeyError if unknown."""
    if name in KNOWN_COLUMNS:
        return (name,)
    if name in DERIVED_GLOBAL:
        return DERIVED_GLOBAL[name]
    found = _derived_template(name)
    if found is not None:
        template, lead = found
        return tuple(c.replace("{lead}", lead) for c in DERIVED_PER_LEAD[template])
    raise KeyError(name)


def is_known_feature(name: str) -> bool:
    try:
        feature_inputs(name)
    except KeyError:
        return False
    return True


def known_features_help() -> str:
    per_lead = [f"{b}_{{lead}}" for b in LEAD_BASES] + list(DERIVED_PER_LEAD)
    return (
        "global: " + ", ".join(list(GLOBAL_COLUMNS) + list(DERIVED_GLOBAL))
        + "; per lead: " + ", ".join(per_lead)
    )


# ---------------------------------------------------------------------------------------------- parsing


class _Ctx:
    """Where a value sits in the file, for error messages."""

    def __init__(self, path: str, where: str) -> None:
        self.path = path
        self.where = where

    def error(self, message: str) -> StageError:
        return StageError(f"{self.path}: {self.where}: {message}")


def _number(value: Any, ctx: _Ctx, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ctx.error(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _age(value: Any, ctx: _Ctx, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _AGE_LIMIT:
        raise ctx.error(f"{what} must be a whole number of years in 0-{_AGE_LIMIT}, got {value!r}")
    return value


def _parse_threshold(raw: Any, ctx: _Ctx) -> Threshold:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return Threshold((ThresholdCase(_number(raw, ctx, "threshold")),))
    if isinstance(raw, dict):
        if set(raw) != set(SEXES):
            raise ctx.error(f"a sex-specific threshold needs exactly the keys male and female, got {sorted(raw)}")
        cases = tuple(ThresholdCase(_number(raw[s], ctx, f"threshold for {s}"), sex=s) for s in SEXES)
        return Threshold(cases)
    if isinstance(raw, list) and raw:
        cases = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise ctx.error(f"threshold case {i + 1} must be a mapping, got {item!r}")
            unknown = set(item) - {"sex", "age_min", "age_max", "value"}
            if unknown:
                raise ctx.error(f"threshold case {i + 1} has unknown keys {sorted(unknown)}")
            if "value" not in item:
                raise ctx.error(f"threshold case {i + 1} has no value")
            sex = item.get("sex")
            if sex is not None and sex not in SEXES:
                raise ctx.error(f"threshold case {i + 1}: sex must be male or female, got {sex!r}")
            case = ThresholdCase(
                _number(item["value"], ctx, f"threshold case {i + 1} value"),
                sex=sex,
                age_min=_age(item.get("age_min"), ctx, f"threshold case {i + 1} age_min"),
                age_max=_age(item.get("age_max"), ctx, f"threshold case {i + 1} age_max"),
            )
            cases.append(case)
        threshold = Threshold(tuple(cases))
        _check_partition(threshold, ctx)
        return threshold
    raise ctx.error(f"a threshold is a number, a {{male, female}} mapping or a list of cases, got {raw!r}")


def _probe_ages(threshold: Threshold) -> list[int]:
    ages = {0, _AGE_LIMIT}
    for c in threshold.cases:
        for a in (c.age_min, c.age_max):
            if a is not None:
                ages.update({max(a - 1, 0), a, min(a + 1, _AGE_LIMIT)})
    return sorted(ages)


def _check_partition(threshold: Threshold, ctx: _Ctx) -> None:
    """Every (sex, age) must match exactly one case."""
    for sex in SEXES:
        for age in _probe_ages(threshold):
            n = sum(c.matches(sex, age) for c in threshold.cases)
            if n != 1:
                what = "no threshold case" if n == 0 else f"{n} threshold cases"
                raise ctx.error(f"{what} for a {sex} patient aged {age}: the cases must cover every patient exactly once")


def _parse_level(raw: Any, ops: tuple[str, ...], ctx: _Ctx) -> Level:
    if not isinstance(raw, dict):
        raise ctx.error(f"a level must be a mapping with finding, words and one of {'/'.join(ops)}, got {raw!r}")
    present = [op for op in ALL_OPS if op in raw]
    if len(present) != 1 or present[0] not in ops:
        raise ctx.error(f"a level needs exactly one comparison among {'/'.join(ops)}, got {present or 'none'}")
    unknown = set(raw) - {"finding", "words", present[0]}
    if unknown:
        raise ctx.error(f"unknown keys {sorted(unknown)} in a level")
    finding, words = raw.get("finding"), raw.get("words")
    _check_id(finding, ctx, "finding")
    if not isinstance(words, str) or not words.strip():
        raise ctx.error("a level needs non-empty words")
    return Level(finding=finding, words=words.strip(), op=present[0], threshold=_parse_threshold(raw[present[0]], ctx))


def _check_id(value: Any, ctx: _Ctx, what: str) -> None:
    if not isinstance(value, str) or not value or not all(ch.isalnum() or ch == "_" for ch in value):
        raise ctx.error(f"{what} must be a non-empty name of letters, digits and _, got {value!r}")


def _parse_side(raw: Any, ops: tuple[str, ...], side: str, ctx: _Ctx) -> tuple[Level, ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    levels = tuple(_parse_level(item, ops, _Ctx(ctx.path, f"{ctx.where}, {side} level {i + 1}")) for i, item in enumerate(items))
    # graded levels: each one more extreme than the one before, for every patient
    probe = Threshold(tuple(c for lvl in levels for c in lvl.threshold.cases))
    for a, b in zip(levels, levels[1:]):
        for sex in SEXES:
            for age in _probe_ages(probe):
                ta, tb = a.threshold.value_for(sex, age), b.threshold.value_for(sex, age)
                if (side == "above" and tb < ta) or (side == "below" and tb > ta):
                    raise ctx.error(f"{side} levels must go from mildest to most extreme ({b.finding} is milder than {a.finding})")
    return levels


def _parse_leads(raw: Any, groups: dict[str, tuple[str, ...]], ctx: _Ctx) -> tuple[str, ...] | None:
    if raw == "global":
        return None
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise ctx.error(f"leads must be 'global' or a list of leads / lead groups, got {raw!r}")
    chosen: set[str] = set()
    for item in items:
        if item in groups:
            chosen.update(groups[item])
            continue
        try:
            chosen.add(canonical_lead(str(item)))
        except ValueError:
            raise ctx.error(f"unknown lead or lead group {item!r} (groups: {', '.join(groups) or 'none'})") from None
    return tuple(lead for lead in LEADS if lead in chosen)


def _check_feature(name: Any, per_lead: bool, ctx: _Ctx, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ctx.error(f"{what} must be a feature name")
    if per_lead and "{lead}" in name:
        bad = [lead for lead in LEADS if not is_known_feature(name.replace("{lead}", lead))]
        if bad:
            raise ctx.error(f"unknown feature {name!r} (known features: {known_features_help()})")
    elif "{lead}" in name:
        raise ctx.error(f"{what} {name!r} holds {{lead}} but the rule is global")
    elif not is_known_feature(name):
        raise ctx.error(f"unknown feature {name!r} (known features: {known_features_help()})")
    return name


def _parse_gate(raw: Any, per_lead: bool, ctx: _Ctx) -> Gate:
    if not isinstance(raw, dict):
        raise ctx.error(f"a gate in 'when' must be a mapping {{feature, lt|le|gt|ge}}, got {raw!r}")
    ops = [op for op in ALL_OPS if op in raw]
    unknown = set(raw) - {"feature", "null_passes", *ALL_OPS}
    if len(ops) != 1 or unknown:
        raise ctx.error(f"a gate needs a feature and exactly one of lt/le/gt/ge, got keys {sorted(raw)}")
    feature = _check_feature(raw.get("feature"), per_lead, ctx, "gate feature")
    null_passes = raw.get("null_passes", False)
    if not isinstance(null_passes, bool):
        raise ctx.error(f"null_passes must be true or false, got {null_passes!r}")
    return Gate(feature=feature, op=ops[0], value=_number(raw[ops[0]], ctx, "gate value"), null_passes=null_passes)


_RULE_KEYS = {"id", "feature", "leads", "below", "above", "within", "when", "source", "note", "contiguous"}


def _parse_contiguous(raw: Any, groups: dict[str, tuple[str, ...]], ctx: _Ctx) -> Contiguous:
    if not isinstance(raw, dict) or set(raw) != {"leads", "groups"}:
        raise ctx.error(f"contiguous must be a mapping with leads (a number) and groups (lead group names), got {raw!r}")
    n = raw["leads"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ctx.error(f"contiguous leads must be a whole number of at least 2, got {n!r}")
    names = raw["groups"]
    if not isinstance(names, list) or not names:
        raise ctx.error(f"contiguous groups must be a non-empty list of lead group names, got {names!r}")
    for name in names:
        if name not in groups:
            raise ctx.error(f"contiguous group {name!r} is not a lead group (groups: {', '.join(groups) or 'none'})")
        if len(groups[name]) < n:
            raise ctx.error(f"contiguous group {name!r} has fewer than {n} leads")
    resolved = tuple(tuple(lead for lead in LEADS if lead in groups[name]) for name in names)
    return Contiguous(min_leads=n, groups=resolved, group_names=tuple(names))


def _parse_within(w: Any, ctx: "_Ctx") -> "Within | None":
    """A rule's ``within`` (a finding and its words for values inside both limits), or None."""
    if w is None:
        return None
    if not isinstance(w, dict) or set(w) != {"finding", "words"}:
        raise ctx.error(f"within must be a mapping with finding and words, got {w!r}")
    _check_id(w["finding"], ctx, "within finding")
    if not isinstance(w["words"], str) or not w["words"].strip():
        raise ctx.error("within needs non-empty words")
    return Within(finding=w["finding"], words=w["words"].strip())


def parse_rule(raw: Any, index: int, groups: dict[str, tuple[str, ...]], path: str) -> Rule:
    """Validate one rule mapping; raise StageError naming the file, the rule and the problem."""
    ctx = _Ctx(path, f"rule {index + 1}")
    if not isinstance(raw, dict):
        raise ctx.error(f"a rule must be a mapping, got {raw!r}")
    if isinstance(raw.get("id"), str):
        ctx = _Ctx(path, f"rule {index + 1} ({raw['id']})")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ctx.error(f"unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(_RULE_KEYS))})")
    _check_id(raw.get("id"), ctx, "id")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ctx.error("no source given: every rule must name the guideline its thresholds come from")
    if "leads" not in raw:
        raise ctx.error("no leads given ('global' or a list of leads / lead groups)")
    leads = _parse_leads(raw["leads"], groups, ctx)
    per_lead = leads is not None
    feature = raw.get("feature")
    if per_lead and isinstance(feature, str) and "{lead}" not in feature:
        raise ctx.error(f"feature {feature!r} of a per-lead rule must hold {{lead}}")
    feature = _check_feature(feature, per_lead, ctx, "feature")
    below = _parse_side(raw.get("below"), BELOW_OPS, "below", ctx)
    above = _parse_side(raw.get("above"), ABOVE_OPS, "above", ctx)
    within = _parse_within(raw.get("within"), ctx)
    if not below and not above and within is None:
        raise ctx.error("the rule says nothing: give below, above or within")
    when_raw = raw.get("when") or []
    if not isinstance(when_raw, list):
        raise ctx.error("when must be a list of gates")
    when = tuple(_parse_gate(g, per_lead, ctx) for g in when_raw)
    contiguous = None
    if raw.get("contiguous") is not None:
        if not per_lead or within is not None:
            raise ctx.error("contiguous applies to per-lead rules only" if not per_lead
                            else "a rule with contiguous cannot have within")  # fmt: skip
        contiguous = _parse_contiguous(raw["contiguous"], groups, ctx)
    return Rule(
        id=raw["id"], feature=feature, leads=leads, below=below, above=above, within=within,
        when=when, source=source.strip(), contiguous=contiguous,
    )


def _check_contiguous_findings(rules: tuple[Rule, ...], path: str) -> None:
    """Rules that share a finding with a contiguous rule must give the same contiguous and words."""
    first: dict[str, tuple[Rule, Level]] = {}
    for rule in rules:
        for level in rule.levels():
            if level.finding not in first:
                first[level.finding] = (rule, level)
                continue
            other, other_level = first[level.finding]
            if other.contiguous is None and rule.contiguous is None:
                continue
            if other.contiguous != rule.contiguous or other_level.words != level.words:
                raise StageError(
                    f"{path}: rules {other.id!r} and {rule.id!r} both write finding {level.finding!r}, which needs "
                    "contiguous leads: they must give the same contiguous and the same words"
                )


def parse_guidelines(data: Any, path: str = "<guidelines>") -> Guidelines:
    """Validate a parsed guidelines document (``{version: 1, lead_groups: ..., rules: [...]}``)."""
    if not isinstance(data, dict):
        raise StageError(f"{path}: the guidelines file must be a mapping with 'rules', got {type(data).__name__}")
    unknown = set(data) - {"version", "lead_groups", "rules"}
    if unknown:
        raise StageError(f"{path}: unknown top-level keys {sorted(unknown)} (allowed: version, lead_groups, rules)")
    if data.get("version", 1) != 1:
        raise StageError(f"{path}: unsupported guidelines version {data.get('version')!r} (this code reads version 1)")
    groups: dict[str, tuple[str, ...]] = {}
    for name, leads in (data.get("lead_groups") or {}).items():
        ctx = _Ctx(path, f"lead group {name!r}")
        _check_id(name, ctx, "lead group name")
        if name.upper() in {lead.upper() for lead in LEADS} or name == "global":
            raise ctx.error("a lead group may not be named like a lead or 'global'")
        if not isinstance(leads, list) or not leads:
            raise ctx.error("a lead group is a non-empty list of leads")
        try:
            groups[name] = tuple(canonical_lead(str(lead)) for lead in leads)
        except ValueError as err:
            raise ctx.error(str(err)) from None
    rules_raw = data.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        raise StageError(f"{path}: 'rules' must be a non-empty list")
    rules = tuple(parse_rule(raw, i, groups, path) for i, raw in enumerate(rules_raw))
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise StageError(f"{path}: rule id {rule.id!r} is used twice")
        seen.add(rule.id)
    _check_contiguous_findings(rules, path)
    return Guidelines(rules=rules, path=path)


def load_guidelines(path: str | Path = DEFAULT_GUIDELINES) -> Guidelines:
    """Read and validate a guidelines YAML file; StageError names the file and the offending rule."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise StageError(f"{path}: cannot read guidelines ({err.strerror})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise StageError(f"{path}: not valid YAML: {err}") from err
    return parse_guidelines(data, str(path))
