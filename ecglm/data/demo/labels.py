"""Sample the demo world's records: their SCP codes, patients, folds and metadata columns.

The code model reproduces PTB-XL 1.0.3's class frequencies (superclasses NORM 43.6 %, MI 25.1 %,
STTC 24.0 %, CD 22.5 %, HYP 12.2 %, none 1.9 %, multi-label; rhythm SR 77 %, AFIB 7 %, STACH 4 %,
SBRAD 3 %, SARRH 4 %, no rhythm code 5 %) and PTB-XL's within-class code mix. Each record has
TRUE codes (what its signal is synthesised from) and WRITTEN codes (ptbxl_database.csv): a few
percent of records carry label noise (a code dropped, added or confused). Rare classes of the three
zero-shot tasks are oversampled per split (train = folds 1-8, val = 9, test = 10) up to a minimum
count of records that hold exactly one of the task's classes.

Everything is drawn from ``numpy.random.Generator`` streams seeded by (seed, purpose[, ecg_id]), so
the world depends only on the seed and the sizes, never on the order or number of workers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

# ---------------------------------------------------------------------------------------------
# Code vocabulary (subset of scp_statements.csv that the synthesiser can draw)
# ---------------------------------------------------------------------------------------------

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
RHYTHMS: tuple[str, ...] = ("SR", "STACH", "SBRAD", "AFIB", "SARRH")
FORMS: tuple[str, ...] = ("ABQRS", "NDT", "NST_", "DIG", "LNGQT")
#: The three zero-shot tasks and their five classes (the paper's option order A-E).
TASKS: dict[str, tuple[str, ...]] = {"diagnostic": SUPERCLASSES, "rhythm": RHYTHMS, "form": FORMS}
SPLITS: dict[str, tuple[int, ...]] = {"train": tuple(range(1, 9)), "val": (9,), "test": (10,)}

#: PTB-XL 1.0.3 marginals over all records (datasets.md); the sampler is solved to match them.
SUPERCLASS_FREQ = {"NORM": 9514 / 21799, "MI": 5469 / 21799, "STTC": 5235 / 21799, "CD": 4898 / 21799,
                   "HYP": 2649 / 21799}
NO_SUPERCLASS_FREQ = 411 / 21799
RHYTHM_FREQ = {"SR": 0.77, "AFIB": 0.07, "STACH": 0.04, "SBRAD": 0.03, "SARRH": 0.04}
NORM_WITH_CD = 0.03  # share of all records coded NORM plus a minor conduction code (NORM + IRBBB ...)

#: Diagnostic codes per superclass with their share inside the class (PTB-XL counts, codes the
#: synthesiser can draw; WPW, 2AVB, 3AVB, ANEUR, EL are left out).
CLASS_CODES: dict[str, tuple[tuple[str, float], ...]] = {
    "MI": (("IMI", 2685), ("ASMI", 2363), ("ILMI", 479), ("AMI", 354), ("ALMI", 290), ("LMI", 201),
           ("INJAS", 215), ("INJAL", 148), ("IPLMI", 51), ("IPMI", 33), ("INJIN", 18), ("INJLA", 17),
           ("PMI", 17), ("INJIL", 15)),
    "STTC": (("NDT", 1829), ("ISC_", 1275), ("NST_", 770), ("ISCAL", 660), ("ISCIN", 219),
             ("ISCIL", 179), ("DIG", 181), ("ISCAS", 170), ("ISCLA", 142), ("LNGQT", 118), ("ISCAN", 44)),
    "CD": (("LAFB", 1626), ("IRBBB", 1118), ("1AVB", 797), ("IVCD", 789), ("CRBBB", 542),
           ("CLBBB", 536), ("LPFB", 177), ("ILBBB", 77)),
    "HYP": (("LVH", 2137), ("LAO/LAE", 427), ("RVH", 126), ("RAO/RAE", 99), ("SEHYP", 30)),
}
CODE_CLASS: dict[str, str] = {code: sc for sc, codes in CLASS_CODES.items() for code, _ in codes}
CODE_CLASS["NORM"] = "NORM"
#: Pairs that never occur together in one record (the second is dropped).
EXCLUSIVE: tuple[frozenset[str], ...] = tuple(frozenset(p) for p in (
    ("CLBBB", "CRBBB"), ("CLBBB", "IRBBB"), ("CLBBB", "ILBBB"), ("CRBBB", "IRBBB"), ("LAFB", "LPFB"),
    ("CLBBB", "LAFB"), ("CLBBB", "LPFB"), ("ILBBB", "CRBBB"), ("ILBBB", "IRBBB"), ("IVCD", "CLBBB"),
    ("IVCD", "CRBBB"), ("DIG", "LNGQT"),
))
MINOR_CD = ("IRBBB", "LAFB", "1AVB")  # the conduction codes that occur beside NORM
STTC_FORMS = ("NDT", "NST_", "DIG", "LNGQT")  # diagnostic codes that are also form codes
#: Territory of each MI / ischaemia code (the leads where the synthesiser puts its signs).
TERRITORY: dict[str, tuple[str, ...]] = {
    "IMI": ("inferior",), "ILMI": ("inferior", "lateral"), "IPMI": ("inferior", "posterior"),
    "IPLMI": ("inferior", "posterior", "lateral"), "ASMI": ("septal", "anterior"), "AMI": ("anterior",),
    "ALMI": ("anterior", "lateral"), "LMI": ("lateral",), "PMI": ("posterior",),
    "INJAS": ("septal", "anterior"), "INJAL": ("anterior", "lateral"), "INJIN": ("inferior",),
    "INJLA": ("lateral",), "INJIL": ("inferior", "lateral"),
    "ISCAL": ("anterior", "lateral"), "ISCIN": ("inferior",), "ISCIL": ("inferior", "lateral"),
    "ISCAS": ("septal", "anterior"), "ISCLA": ("lateral",), "ISCAN": ("anterior",),
}
LIKELIHOODS = (100.0, 80.0, 50.0, 35.0, 15.0)
LIKELIHOOD_P = (0.62, 0.10, 0.14, 0.07, 0.07)

# Metadata columns: devices (as written, internal spaces included), their share, and the report
# languages they write (CS-12   E also wrote Swedish; AT-6 wrote English or Swedish).
DEVICES: tuple[tuple[str, float, dict[str, float]], ...] = (
    ("CS-12   E", 0.30, {"de": 0.95, "sv": 0.04, "en": 0.01}),
    ("CS100    3", 0.22, {"de": 0.97, "en": 0.03}),
    ("AT-6 C 5.5", 0.15, {"en": 0.95, "de": 0.05}),
    ("CS-12", 0.08, {"de": 0.97, "en": 0.03}),
    ("AT-6     6", 0.07, {"en": 0.94, "de": 0.06}),
    ("AT-6 C", 0.06, {"sv": 0.99, "de": 0.01}),
    ("AT-6 C 5.8", 0.04, {"en": 0.97, "de": 0.03}),
    ("AT-60    3", 0.03, {"de": 0.97, "en": 0.03}),
    ("AT-6 C 5.0", 0.02, {"en": 0.6, "sv": 0.3, "de": 0.1}),
    ("AT-6 C 5.6", 0.02, {"en": 1.0}),
    ("AT-6 C 5.3", 0.01, {"en": 1.0}),
)
AUTO_REPORT_DEVICES = ("CS100    3",)  # SCHILLER auto-reports: '... 4.46   unbestÄtigter bericht'
ELECTRODES: tuple[str, ...] = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")
LIMB_ELECTRODES = ("RA", "LA", "LL")
# Noise column texts (as PTB-XL writes them) and the electrodes the synthesiser disturbs for each.
STATIC_NOISE = ((" , I-AVF,  ", LIMB_ELECTRODES), (" , I-AVR,  ", LIMB_ELECTRODES),
                (" , alles,  ", ELECTRODES), (" , I-V1,  ", LIMB_ELECTRODES + ("V1",)),
                (" , I-V2,  ", LIMB_ELECTRODES + ("V1", "V2")), (" , I-AVL,  ", LIMB_ELECTRODES),
                (" , mittel,  ", ELECTRODES), (" , leicht,  ", ELECTRODES), (" , V1,  ", ("V1",)))
BASELINE_DRIFT = ((" , V6", ("V6",)), (" , V1", ("V1",)), (" , alles", ELECTRODES),
                  (" , II-AVF", LIMB_ELECTRODES), (" , II,III,AVF", ("LL",)), (" , III,AVF", ("LL",)),
                  (" , V5", ("V5",)), ("v6,  ", ("V6",)), (" , I-AVF", LIMB_ELECTRODES))
BURST_NOISE = (("alles", ELECTRODES), ("V1", ("V1",)), ("V1,V2", ("V1", "V2")),
               ("I-AVF", LIMB_ELECTRODES), ("I-V1", LIMB_ELECTRODES + ("V1",)), ("v3", ("V3",)),
               ("I-V2", LIMB_ELECTRODES + ("V1", "V2")))
ELECTRODE_PROBLEMS = (("V1", ("V1",)), ("V4", ("V4",)), ("V6", ("V6",)))
STADIUM = (("unknown", 0.50), ("Stadium III", 0.26), ("Stadium II-III", 0.13), ("Stadium I", 0.06),
           ("Stadium II", 0.05))
FIRST_DATE = dt.datetime(1984, 11, 9, 9, 17, 34)
LAST_DATE = dt.datetime(2001, 6, 30, 17, 0, 0)


@dataclass
class NoisePlan:
    """Which artefacts a record carries, as the noise columns state them and as electrodes."""

    baseline_drift: str = ""
    static_noise: str = ""
    burst_noise: str = ""
    electrodes_problems: str = ""
    drift_electrodes: tuple[str, ...] = ()
    static_electrodes: tuple[str, ...] = ()
    burst_electrodes: tuple[str, ...] = ()
    problem_electrodes: tuple[str, ...] = ()
    static_level: float = 1.0


@dataclass
class RecordPlan:
    """Everything one record's worker needs; ``true_codes`` drive the signal, ``codes`` are written."""

    ecg_id: int = 0
    patient_id: int = 0
    true_codes: dict[str, float] = field(default_factory=dict)
    codes: dict[str, float] = field(default_factory=dict)
    rhythm: str | None = "SR"  # true rhythm code (None: no rhythm statement, sinus physiology)
    label_noise: str = ""  # what differs between codes and true_codes
    stadium1: str = ""
    stadium2: str = ""
    n_pvc: int = 0
    n_pac: int = 0
    extra_beats: str = ""
    noise: NoisePlan = field(default_factory=NoisePlan)
    age: float | None = None  # None: empty cell; 300.0 for some of the very old
    true_age: int = 60
    sex: int = 0
    height: float | None = None
    weight: float | None = None
    nurse: float | None = None
    site: float | None = None
    device: str = "CS-12   E"
    language: str = "de"
    recording_date: str = ""
    validated_by: float | None = None
    second_opinion: bool = False
    auto_report: bool = False
    validated_by_human: bool = True
    show_axis: bool = True  # heart_axis column filled (from the measured axis) or left empty
    edit_note: bool = False
    strat_fold: int = 1
    oversampled: str = ""  # "" for a base record, else "task:class:split" it was added for
    duplicate_of: int = 0  # >0: a removed 1.0.1 duplicate (an ID gap), never written as a record

    @property
    def superclasses(self) -> list[str]:
        """The true diagnostic superclasses, in SUPERCLASSES order."""
        return superclasses_of(self.true_codes)


def superclasses_of(codes: dict[str, float] | list[str]) -> list[str]:
    """The diagnostic superclasses of a code set, in SUPERCLASSES order."""
    found = {CODE_CLASS[c] for c in codes if c in CODE_CLASS}
    return [s for s in SUPERCLASSES if s in found]


def task_labels(codes: dict[str, float] | list[str], task: str) -> list[str]:
    """The classes of a zero-shot task present in a code set, in the task's class order."""
    if task == "diagnostic":
        return superclasses_of(codes)
    return [c for c in TASKS[task] if c in codes]


def split_of_fold(fold: int) -> str:
    for name, folds in SPLITS.items():
        if fold in folds:
            return name
    raise ValueError(f"strat_fold {fold} is not in 1-10")


def stream(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    """An independent random stream for (seed, purpose, keys...): order- and worker-independent."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, purpose, *keys]))


def _solve_independent(targets: list[float]) -> np.ndarray:
    """q such that drawing each class with q_k, conditioned on at least one, gives marginals targets."""
    t = np.asarray(targets)
    q = t.copy()
    for _ in range(200):
        q = np.clip(t * (1.0 - np.prod(1.0 - q)), 1e-6, 0.999)
    return q


_PATHOLOGY = ("MI", "STTC", "CD", "HYP")
# P(NORM) among non-AF records: AF records are never NORM, so the others make up for them.
_P_NORM = SUPERCLASS_FREQ["NORM"] / (1.0 - RHYTHM_FREQ["AFIB"])
_P_PATH = 1.0 - SUPERCLASS_FREQ["NORM"] - NO_SUPERCLASS_FREQ
_Q_PATH = _solve_independent(
    [SUPERCLASS_FREQ[s] / _P_PATH - (NORM_WITH_CD / _P_PATH if s == "CD" else 0.0) for s in _PATHOLOGY]
)


def _pick(rng: np.random.Generator, items: tuple[tuple[str, float], ...]) -> str:
    names = [n for n, _ in items]
    w = np.asarray([w for _, w in items], dtype=float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def _sample_rhythm(rng: np.random.Generator) -> str | None:
    names = list(RHYTHM_FREQ) + [None]
    p = np.asarray(list(RHYTHM_FREQ.values()) + [1.0 - sum(RHYTHM_FREQ.values())])
    return names[int(rng.choice(len(names), p=p))]


def _sample_superclasses(rng: np.random.Generator, allow_norm: bool) -> list[str]:
    u = rng.random()
    p_norm = _P_NORM if allow_norm else 0.0
    if u < p_norm:
        return ["NORM"]
    if u < p_norm + NO_SUPERCLASS_FREQ:
        return []
    while True:
        chosen = [s for s, q in zip(_PATHOLOGY, _Q_PATH) if rng.random() < q]
        if chosen:
            return chosen


def _likelihood(rng: np.random.Generator) -> float:
    return LIKELIHOODS[int(rng.choice(len(LIKELIHOODS), p=LIKELIHOOD_P))]


def _compatible(code: str, chosen: list[str]) -> bool:
    return all(frozenset((code, c)) not in EXCLUSIVE for c in chosen if c != code)


def _class_codes(rng: np.random.Generator, sc: str) -> list[str]:
    """One code of a pathological superclass, plus a second one in 15 % of records."""
    codes = [_pick(rng, CLASS_CODES[sc])]
    if rng.random() < 0.15:
        second = _pick(rng, CLASS_CODES[sc])
        if second not in codes and _compatible(second, codes):
            codes.append(second)
    return codes


def sample_codes(rng: np.random.Generator, force: tuple[str, str] | None = None) -> tuple[str | None, dict[str, float]]:
    """Draw one record's (rhythm, true scp_codes dict) from the PTB-XL-like code model.

    ``force``: (task, class) to draw a record whose labels for that zero-shot task are EXACTLY that
    one class (diagnostic: that single superclass; rhythm: that rhythm; form: that one of the five
    form classes); the other tasks' labels follow the natural model. The dict is ordered like
    PTB-XL's: diagnostic codes, then form codes, then the rhythm code (likelihood 0.0).
    """
    task, cls = force if force else (None, None)
    rhythm = cls if task == "rhythm" else _sample_rhythm(rng)
    if task == "diagnostic":
        supers = [cls]
    else:
        supers = _sample_superclasses(rng, allow_norm=rhythm != "AFIB")
    if task == "form" and cls in STTC_FORMS and "STTC" not in supers:
        supers = [s for s in supers if s != "NORM"] + ["STTC"]
    diag: list[str] = []
    for sc in supers:
        diag += ["NORM"] if sc == "NORM" else _class_codes(rng, sc)
    if supers == ["NORM"] and task != "diagnostic" and rng.random() < NORM_WITH_CD / _P_NORM:
        diag.append(str(rng.choice(MINOR_CD)))
    if rhythm == "AFIB" and "1AVB" in diag:  # no PR interval in AF
        diag = [c for c in diag if c != "1AVB"] or ["LAFB"]
        if "LAFB" in diag and not _compatible("LAFB", [c for c in diag if c != "LAFB"]):
            diag = [c for c in diag if c != "LAFB"] + ["IVCD"]
    if task == "form":
        diag = _force_form(diag, cls)
    diag = _dedupe_compatible(diag)
    likelihood = {c: _likelihood(rng) for c in diag}
    if "NORM" in likelihood:
        likelihood["NORM"] = 80.0 if (rhythm in ("SBRAD", "STACH", "SARRH") or rng.random() < 0.15) else 100.0
    forms = _form_codes(rng, diag, rhythm, task, cls)
    codes: dict[str, float] = dict(likelihood)
    for f in forms:
        codes[f] = 100.0 if f in ("PVC", "PAC") and rng.random() < 0.6 else 0.0
    if rhythm is not None:
        codes[rhythm] = 0.0
    return rhythm, codes


def _dedupe_compatible(codes: list[str]) -> list[str]:
    out: list[str] = []
    for c in codes:
        if c not in out and _compatible(c, out):
            out.append(c)
    return out


def _force_form(diag: list[str], cls: str) -> list[str]:
    """Make the record's STTC form codes exactly ``cls`` (or none of them when cls is ABQRS)."""
    kept = [c for c in diag if c not in STTC_FORMS]
    if cls in STTC_FORMS:
        kept = [c for c in kept if c != "NORM"] + [cls]
    return kept or ["NORM"]


def _form_codes(rng: np.random.Generator, diag: list[str], rhythm: str | None, task: str | None,
                cls: str | None) -> list[str]:
    """Form-only codes that PTB-XL attaches beside the diagnostic ones (ABQRS mostly with MI ...)."""
    supers = superclasses_of(diag)
    forms: list[str] = []
    has_mi = "MI" in supers and any(c in diag for c in ("IMI", "ILMI", "ASMI", "AMI", "ALMI", "LMI", "IPMI", "IPLMI"))
    p_abqrs = 0.55 if has_mi else (0.06 if "CD" in supers else 0.025)
    if rng.random() < p_abqrs:
        forms.append("ABQRS")
    if has_mi and rng.random() < 0.12:
        forms.append("QWAVE")
    if any(c.startswith("ISC") for c in diag) and rng.random() < 0.35:
        forms.append("STD_")
    if "LVH" in diag and rng.random() < 0.35:
        forms.append("VCLVH")
    if any(c in diag for c in ("NDT", "ISC_", "ISCAL", "ISCIN")):
        for code, p in (("LOWT", 0.12), ("NT_", 0.12), ("INVT", 0.08)):
            if rng.random() < p:
                forms.append(code)
    if rng.random() < 0.05:
        forms.append("PVC")
    if rhythm != "AFIB" and rng.random() < 0.02:
        forms.append("PAC")
    if rng.random() < 0.01 and "HYP" not in supers:
        forms.append("LVOLT")
    if not supers and not forms:
        forms.append(str(rng.choice(["PVC", "LVOLT", "PAC" if rhythm != "AFIB" else "PVC"])))
    if task == "form":
        forms = [f for f in forms if f not in FORMS]
        if cls == "ABQRS":
            forms.insert(0, "ABQRS")
    return forms


def add_label_noise(rng: np.random.Generator, rhythm: str | None, codes: dict[str, float],
                    rate: float) -> tuple[dict[str, float], str]:
    """The written codes: ``codes`` with, at probability ``rate``, one realistic labelling error.

    Errors: a rhythm confused with its neighbour (SARRH written SR, borderline SBRAD/STACH written SR),
    one of several diagnostic codes dropped, a spurious minor code added, NDT and NST_ confused.
    Returns (written codes, a short description of the error or "").
    """
    if rng.random() >= rate:
        return dict(codes), ""
    kind = int(rng.integers(4))
    out = dict(codes)
    if kind == 0 and rhythm in ("SARRH", "SBRAD", "STACH"):
        out = {("SR" if c == rhythm else c): v for c, v in out.items()}
        return out, f"rhythm {rhythm} written as SR"
    diag = [c for c in out if c in CODE_CLASS]
    if kind == 1 and len(diag) > 1:
        drop = diag[int(rng.integers(len(diag)))]
        del out[drop]
        return out, f"{drop} missing"
    if kind == 2 and ("NDT" in out or "NST_" in out):
        a, b = ("NDT", "NST_") if "NDT" in out else ("NST_", "NDT")
        out = {(b if c == a else c): v for c, v in out.items()}
        return out, f"{a} written as {b}"
    extra = str(rng.choice(["NDT", "IRBBB", "LAFB", "NST_"]))
    if extra in out or not _compatible(extra, list(out)):
        return dict(codes), ""
    items = list(out.items())
    n_diag = sum(1 for c, _ in items if c in CODE_CLASS)
    if "NORM" in out and extra in ("NDT", "NST_"):
        items = [(c, v) for c, v in items if c != "NORM"]
        n_diag -= 1
    items.insert(n_diag, (extra, 50.0))
    return dict(items), f"{extra} added"


# ---------------------------------------------------------------------------------------------
# Patients, folds, metadata
# ---------------------------------------------------------------------------------------------

def _records_per_patient(rng: np.random.Generator, n_records: int) -> list[int]:
    """Record counts per patient with PTB-XL's mix (21,799 records of 18,869 patients)."""
    counts: list[int] = []
    while sum(counts) < n_records:
        k = int(rng.choice([1, 2, 3, 4, 5], p=[0.885, 0.085, 0.02, 0.007, 0.003]))
        counts.append(min(k, n_records - sum(counts)))
    return counts


def _assign_folds(rng: np.random.Generator, sizes: list[int]) -> list[int]:
    """Fold 1-10 per patient, balancing the records per fold (patient-stratified like PTB-XL)."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], rng.random()))
    load = np.zeros(10)
    folds = [0] * len(sizes)
    for i in order:
        candidates = np.flatnonzero(load == load.min())
        f = int(rng.choice(candidates))
        folds[i] = f + 1
        load[f] += sizes[i]
    return folds


def _noise_plan(rng: np.random.Generator) -> NoisePlan:
    plan = NoisePlan()
    if rng.random() < 0.14:
        text, el = STATIC_NOISE[int(rng.choice(len(STATIC_NOISE), p=_weights(len(STATIC_NOISE))))]
        plan.static_noise, plan.static_electrodes = text, el
        plan.static_level = {"leicht": 0.5, "mittel": 1.0}.get(text.strip(" ,"), 1.0)
    if rng.random() < 0.08:
        text, el = BASELINE_DRIFT[int(rng.choice(len(BASELINE_DRIFT), p=_weights(len(BASELINE_DRIFT))))]
        plan.baseline_drift, plan.drift_electrodes = text, el
    if rng.random() < 0.05:
        text, el = BURST_NOISE[int(rng.choice(len(BURST_NOISE), p=_weights(len(BURST_NOISE))))]
        plan.burst_noise, plan.burst_electrodes = text, el
    if rng.random() < 0.006:
        text, el = ELECTRODE_PROBLEMS[int(rng.integers(len(ELECTRODE_PROBLEMS)))]
        plan.electrodes_problems, plan.problem_electrodes = text, el
    return plan


def _weights(n: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1)  # the first (most common in PTB-XL) texts first
    return w / w.sum()


def _extra_beats_text(rng: np.random.Generator, n_pvc: int, n_pac: int) -> str:
    if n_pvc and n_pac:
        return f"{n_pvc + n_pac}ES"
    if n_pvc:
        return str(rng.choice([f"{n_pvc}ES", "VES", f"VES{n_pvc},alles"], p=[0.45, 0.35, 0.2]))
    if n_pac:
        return str(rng.choice(["SVES", f"{n_pac}ES"], p=[0.6, 0.4]))
    return ""


def _patient(rng: np.random.Generator) -> dict:
    sex = int(rng.random() < 0.48)
    age = int(np.clip(rng.normal(61, 16), 2, 95))
    height = float(np.round(rng.normal(176 if sex == 0 else 163, 7)))
    weight = float(np.round(np.clip(rng.normal(80 if sex == 0 else 68, 13), 35, 160)))
    return {"sex": sex, "age": age, "height": height, "weight": weight,
            "show_height": rng.random() < 0.32, "show_weight": rng.random() < 0.45}


def _fill_metadata(rng: np.random.Generator, plan: RecordPlan, patient: dict, age_offset: int) -> None:
    """Demographics, device, language and the remaining metadata columns of one record."""
    age = min(patient["age"] + age_offset, 99)
    plan.true_age = age
    plan.sex = patient["sex"]
    if rng.random() < 0.01:
        plan.age = None
    elif age >= 89 and rng.random() < 0.4:
        plan.age = 300.0  # PTB-XL codes ages above 89 as 300, yet plain 89-94 occur too
    else:
        plan.age = float(age)
    plan.height = patient["height"] if patient["show_height"] else None
    plan.weight = patient["weight"] if patient["show_weight"] else None
    d = DEVICES[int(rng.choice(len(DEVICES), p=np.asarray([p for _, p, _ in DEVICES]) / sum(p for _, p, _ in DEVICES)))]
    plan.device = d[0]
    langs = list(d[2])
    plan.language = langs[int(rng.choice(len(langs), p=np.asarray(list(d[2].values()))))]
    plan.auto_report = plan.device in AUTO_REPORT_DEVICES and plan.language == "de" and rng.random() < 0.92
    plan.nurse = None if rng.random() < 0.1 else float(rng.choice(12, p=_weights(12)))
    plan.site = float(rng.choice(51, p=_weights(51) ** 1.5 / (_weights(51) ** 1.5).sum()))
    plan.validated_by = None if rng.random() < 0.5 else float(rng.choice(12, p=_weights(12)))
    plan.second_opinion = bool(rng.random() < 0.015)
    plan.show_axis = bool(rng.random() < 0.6)
    plan.edit_note = bool(rng.random() < 0.015)
    plan.noise = _noise_plan(rng)
    if "PVC" in plan.true_codes:
        plan.n_pvc = int(rng.integers(1, 4))
    if "PAC" in plan.true_codes:
        plan.n_pac = int(rng.integers(1, 3))
    plan.extra_beats = _extra_beats_text(rng, plan.n_pvc, plan.n_pac)
    if "MI" in superclasses_of(plan.true_codes):
        names = [s for s, _ in STADIUM]
        plan.stadium1 = names[int(rng.choice(len(names), p=[p for _, p in STADIUM]))]
        if plan.stadium1 != "unknown" and rng.random() < 0.02:
            plan.stadium2 = "Stadium III"


def sample_world_plans(n_records: int, seed: int, min_per_class: int = 0,
                       label_noise: float = 0.03, gap_rate: float = 0.01) -> list[RecordPlan]:
    """The demo world's records, sorted by ecg_id (removed duplicates included, marked duplicate_of).

    ``n_records`` base records follow the natural PTB-XL-like distribution; then, per split and per
    class of each zero-shot task, records holding exactly that one class (written codes) are added
    until the split holds ``min_per_class`` of them (``oversampled`` names why). ecg_ids run over
    all records in a shuffled order, with gaps (``gap_rate``, at least 2) where PTB-XL 1.0.3 removed
    1.0.1 duplicates; recording dates increase with ecg_id; patients keep sex, height and weight.
    """
    if n_records < 1:
        raise ValueError("n_records must be at least 1")
    rng = stream(seed, 1)
    sizes = _records_per_patient(rng, n_records)
    folds = _assign_folds(rng, sizes)
    patients = [_patient(rng) for _ in sizes]
    plans: list[RecordPlan] = []
    owner: list[int] = []
    for p, k in enumerate(sizes):
        base_rhythm, base_codes = sample_codes(rng)
        for j in range(k):
            rhythm, codes = (base_rhythm, base_codes) if j == 0 else _follow_up(rng, base_rhythm, base_codes)
            plans.append(RecordPlan(true_codes=codes, rhythm=rhythm, strat_fold=folds[p]))
            owner.append(p)
    for i, plan in enumerate(plans):
        plan.codes, plan.label_noise = add_label_noise(rng, plan.rhythm, plan.true_codes, label_noise)
    # oversample the rare zero-shot classes, per split, counted on the written codes
    for split, split_folds in SPLITS.items():
        for task, classes in TASKS.items():
            for cls in classes:
                have = sum(1 for pl in plans if pl.strat_fold in split_folds
                           and task_labels(pl.codes, task) == [cls])
                for _ in range(max(0, min_per_class - have)):
                    rhythm, codes = sample_codes(rng, force=(task, cls))
                    fold = int(rng.choice(split_folds))
                    plans.append(RecordPlan(true_codes=codes, codes=dict(codes), rhythm=rhythm,
                                            strat_fold=fold, oversampled=f"{task}:{cls}:{split}"))
                    patients.append(_patient(rng))
                    owner.append(len(patients) - 1)
    # shuffle, then number with gaps and date in that order
    order = rng.permutation(len(plans))
    n = len(plans)
    n_gaps = max(2, int(round(gap_rate * n)))
    gap_ids = set((rng.choice(np.arange(2, n + n_gaps), size=n_gaps, replace=False) + 0).tolist())
    ids = [i for i in range(1, n + n_gaps + 1) if i not in gap_ids][:n]
    total_days = (LAST_DATE - FIRST_DATE).total_seconds()
    stamps = np.sort(rng.uniform(0, total_days, size=n))
    stamps[0] = 0.0
    patient_ids = rng.choice(np.arange(1, int(len(patients) * 1.16) + 2), size=len(patients), replace=False)
    first_year: dict[int, int] = {}
    ordered: list[RecordPlan] = []
    for rank, idx in enumerate(order):
        plan = plans[idx]
        plan.ecg_id = ids[rank]
        when = FIRST_DATE + dt.timedelta(seconds=int(stamps[rank]))
        plan.recording_date = when.strftime("%Y-%m-%d %H:%M:%S")
        p = owner[idx]
        plan.patient_id = int(patient_ids[p])
        first_year.setdefault(p, when.year)
        _fill_metadata(stream(seed, 2, plan.ecg_id), plan, patients[p], when.year - first_year[p])
        ordered.append(plan)
    by_id = sorted(ordered, key=lambda pl: pl.ecg_id)
    # the gaps: PTB-XL 1.0.3 removed 1.0.1 duplicates; ECG-QA (1.0.1 ids) still refers to them
    for g in sorted(gap_ids):
        src = by_id[int(rng.integers(len(by_id)))]
        ghost = RecordPlan(**{**src.__dict__, "ecg_id": int(g), "duplicate_of": src.ecg_id})
        by_id.append(ghost)
    by_id.sort(key=lambda pl: pl.ecg_id)
    # folds 9 and 10 hold human-validated records only, as in PTB-XL
    for plan in by_id:
        if plan.strat_fold >= 9:
            plan.validated_by_human = True
        else:
            plan.validated_by_human = (not plan.auto_report) or stream(seed, 3, plan.ecg_id).random() < 0.1
    return by_id


def _follow_up(rng: np.random.Generator, rhythm: str | None, codes: dict[str, float]) -> tuple[str | None, dict[str, float]]:
    """A later record of the same patient: chronic findings (MI, HYP, CD) persist, the rest is redrawn."""
    new_rhythm, new_codes = sample_codes(rng)
    keep = {c: v for c, v in codes.items() if CODE_CLASS.get(c) in ("MI", "HYP", "CD") and rng.random() < 0.7}
    if not keep:
        return new_rhythm, new_codes
    diag = {c: v for c, v in new_codes.items() if c in CODE_CLASS and c != "NORM"}
    for c, v in keep.items():
        if c not in diag and _compatible(c, list(diag)) and not (c == "1AVB" and new_rhythm == "AFIB"):
            diag[c] = v
    forms = {c: v for c, v in new_codes.items() if c not in CODE_CLASS and c != new_rhythm}
    out = dict(diag)
    out.update(forms)
    if new_rhythm is not None:
        out[new_rhythm] = 0.0
    return new_rhythm, out
