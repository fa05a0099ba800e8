"""Free-text ECG reports in German, English and Swedish, written the way PTB-XL writes them.

A report is built from the record's WRITTEN codes (so it agrees with scp_codes), its measured heart
axis and heart rate, and the leads where the synthesiser put each finding. The phrases are those of
PTB-XL's own reports (SCHILLER auto-reports and cardiologists' German, AT-6 English, AT-6 C
Swedish), with their quirks: lower case, umlauts as capitals inside words (``ischÄmie``,
``fÖrmaksflimmer``) or, in about 9 % of the German ones, as ae/oe/ue; runs of spaces; German
auto-reports ending ``4.46                          unbestÄtigter bericht``; cut at 255 characters
(even mid-word); a few with a cardiologist's ``Edit:`` note in mixed case with real umlauts, in German
whatever the report's language, naming SCP codes and sometimes sex and age.
"""

from __future__ import annotations

import numpy as np

from ecglm.core.leads import LEADS
from ecglm.data.demo.labels import RecordPlan, stream

MAX_REPORT = 255  # PTB-XL's report field was cut here; an edit note may follow (up to ~280)
AUTO_SUFFIX = "4.46" + " " * 26 + "unbestÄtigter bericht"
TRANSLIT = str.maketrans({"Ä": "ae", "Ö": "oe", "Ü": "ue"})

MI_CODES = ("IMI", "ILMI", "IPMI", "IPLMI", "ASMI", "AMI", "ALMI", "LMI", "PMI")
INJ_CODES = ("INJAS", "INJAL", "INJIN", "INJLA", "INJIL")
ISC_CODES = ("ISC_", "ISCAL", "ISCIN", "ISCIL", "ISCAS", "ISCLA", "ISCAN")

# territory words per code (German adjective stem, English, Swedish)
TERR = {
    "IMI": ("inferior", "inferior", "inferior"), "ILMI": ("inferolateral", "inferolateral", "inferolateral"),
    "IPMI": ("inferoposterior", "inferoposterior", "inferoposterior"),
    "IPLMI": ("inferoposterolateral", "inferoposterolateral", "inferoposterolateral"),
    "ASMI": ("anteroseptal", "anteroseptal", "anteroseptal"), "AMI": ("anterior", "anterior", "anterior"),
    "ALMI": ("anterolateral", "anterolateral", "anterolateral"), "LMI": ("hochlateral", "lateral", "hÖg lateral"),
    "PMI": ("posterior", "posterior", "posterior"),
    "INJAS": ("anteroseptal", "anteroseptal", "anteroseptal"), "INJAL": ("anterolateral", "anterolateral", "anterolateral"),
    "INJIN": ("inferior", "inferior", "inferior"), "INJLA": ("lateral", "lateral", "lateral"),
    "INJIL": ("inferolateral", "inferolateral", "inferolateral"),
    "ISCAL": ("anterolateral", "anterolateral", "anterolateral"), "ISCIN": ("inferior", "inferior", "inferior"),
    "ISCIL": ("inferolateral", "inferolateral", "inferolateral"), "ISCAS": ("anteroseptal", "anteroseptal", "anteroseptal"),
    "ISCLA": ("hochlateral", "lateral", "hÖg lateral"), "ISCAN": ("anterior", "anterior", "anterior"),
}

_LIMB = ("I", "II", "III", "aVR", "aVL", "aVF")


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def leads_en(leads: list[str]) -> str:
    """PTB-XL English lead list: ``i, ii, avl, v4,5,6`` or ``v2-6``."""
    limb = [ld.lower() for ld in leads if ld in _LIMB]
    chest = [int(ld[1:]) for ld in leads if ld.startswith("V")]
    parts = list(limb)
    if chest:
        if len(chest) >= 4 and chest == list(range(chest[0], chest[-1] + 1)):
            parts.append(f"v{chest[0]}-{chest[-1]}")
        else:
            parts.append("v" + ",".join(str(c) for c in chest))
    return ", ".join(parts)


def leads_de(leads: list[str]) -> str:
    """German lead list: ``ii,iii,avf`` or ``v5,v6`` or ``v3-6``."""
    limb = [ld.lower() for ld in leads if ld in _LIMB]
    chest = [int(ld[1:]) for ld in leads if ld.startswith("V")]
    parts = list(limb)
    if len(chest) >= 3 and chest == list(range(chest[0], chest[-1] + 1)):
        parts.append(f"v{chest[0]}-{chest[-1]}")
    else:
        parts += [f"v{c}" for c in chest]
    return ",".join(parts)


def _region_de(leads: list[str]) -> str:
    inferior = sum(ld in ("II", "III", "aVF") for ld in leads)
    lateral = sum(ld in ("I", "aVL", "V5", "V6") for ld in leads)
    anterior = sum(ld in ("V2", "V3", "V4") for ld in leads)
    if inferior >= 2 and lateral >= 2:
        return "inferolateral"
    if anterior >= 2 and lateral >= 2:
        return "anterolateral"
    if inferior >= 2:
        return "inferior"
    if anterior >= 2:
        return "anterior"
    return "hochlateral" if lateral else "lateral"


def _mi_stage_de(plan: RecordPlan, rng: np.random.Generator) -> str:
    return {"Stadium I": "     wahrscheinlich akut", "Stadium II": "     wahrscheinlich subakut",
            "Stadium II-III": "     alter unbest.", "Stadium III": "     wahrscheinlich alt"}.get(
        plan.stadium1, _pick(rng, ["     alter unbest.", "     wahrscheinlich alt"]))


def _mi_stage_sv(plan: RecordPlan, rng: np.random.Generator) -> str:
    return {"Stadium I": "     mÖjligen fÄrsk", "Stadium III": "     sannolikt Äldre"}.get(
        plan.stadium1, "     Ålder ej bestÄmmbar")


def _german(plan: RecordPlan, codes: dict[str, float], axis: str, hr: float, findings: dict[str, list[str]],
            rng: np.random.Generator) -> str:
    auto = plan.auto_report
    short = plan.device in ("CS-12", "AT-60    3") and not auto  # cardiologists' free style
    abn = "abnorm" if auto else "abnormal"
    p: list[str] = []
    if "PVC" in codes:
        p.append("ventrikulÄre extrasystole(n)" if not short else _pick(rng, ["ventr. extrasystolen", "uniforme ves"]))
    if "PAC" in codes:
        p.append("supraventrikulÄre extrasystole(n)")
    rhythm = next((r for r in ("SR", "SBRAD", "STACH", "SARRH", "AFIB") if r in codes), None)
    if rhythm == "AFIB":
        p.append("tachykardes vorhofflimmern" if hr > 100 else "bradykardes vorhofflimmern" if hr < 60
                 else _pick(rng, ["vorhofflimmern/-flattern", "vorhofflimmern", "vorhofflimmern normokard"]))
    elif rhythm:
        p.append({"SR": "sr" if short and rng.random() < 0.3 else "sinusrhythmus", "SBRAD": "sinusbradykardie",
                  "STACH": "sinustachykardie", "SARRH": "sinus arrhythmie"}[rhythm])
    if "1AVB" in codes:
        p.append("a-v block i")
    if "LPR" in codes:
        p.append("pq-verlÄngerung")
    if "LAO/LAE" in codes:
        p.append(_pick(rng, ["p-sinistrocardiale", "verdacht auf p-sinistrocardiale", "p-verbreiterung"]))
    if "RAO/RAE" in codes:
        p.append("p-dextrocardiale")
    if auto or rng.random() < 0.55:
        p.append({"MID": _pick(rng, ["lagetyp normal", "lagetyp normal", "steiltyp"]), "LAD": "llt" if short else "linkstyp",
                  "ALAD": "ueberdrehter linkstyp", "RAD": "rechtstyp", "ARAD": "ueberdrehter rechtstyp",
                  "AXR": "schwierig bestimmbare qrs-achse"}[axis])
    if "LVOLT" in codes:
        p.append("periphere niederspannung")
    cd = {"CLBBB": ["linksschenkelblock", "vollstÄndiger linksschenkelblock"],
          "ILBBB": ["unvollstÄndiger linksschenkelblock"],
          "CRBBB": ["rechtsschenkelblock", "vollstÄndiger rechtsschenkelblock"],
          "IRBBB": ["unvollstÄndiger rechtsschenkelblock"], "LAFB": ["linksanteriorer hemiblock"],
          "LPFB": ["linksposteriorer hemiblock"],
          "IVCD": ["unspezifische intraventrikulÄre leitungsstÖrung", "unspezifischer intraventrikulÄrer block",
                   "intraventr. leitungsstÖrung"]}
    for code, phrases in cd.items():
        if code in codes:
            p.append(_pick(rng, phrases))
    if "LVH" in codes:
        p.append("mÄssige amplitudenkriterien fÜr linkshypertrophie" if "VCLVH" in codes
                 else _pick(rng, ["linkshypertrophie", "linkshypertrophie mÖglich"]))
    elif "VCLVH" in codes:
        p.append("mÄssige amplitudenkriterien fÜr linkshypertrophie")
    if "RVH" in codes:
        p.append(_pick(rng, ["rechtshypertrophie", "rechtshypertrophie mÖglich"]))
    if "SEHYP" in codes:
        p.append("septumhypertrophie mÖglich")
    mis = [c for c in codes if c in MI_CODES]
    if mis:
        items = []
        for c in mis:
            terr = TERR[c][0] + "er"
            lik = codes[c]
            if lik >= 80:
                items.append(f"{terr} infarkt{_mi_stage_de(plan, rng)}")
            elif lik >= 50:
                items.append(f"{terr} infarkt mÖglich")
            else:
                items.append(f"{terr} myokardschaden " + _pick(rng, ["mÖglich", "nicht auszuschliessen"]))
        p.append(f"qrs(t) {abn}    " + "    ".join(items))
    elif "ABQRS" in codes:
        p.append(f"qrs(t) {abn}")
    injs = [c for c in codes if c in INJ_CODES]
    if injs:
        p.append(f"st {abn}, mÖglicherweise    " + "    ".join(f"{TERR[c][0]}er innenschichtsschaden" for c in injs))
    iscs = [c for c in codes if c in ISC_CODES]
    if iscs:
        regions = []
        for c in iscs:
            regions.append(TERR[c][0] + "e" if c in TERR else _region_de(findings.get(c, [])) + "e")
        p.append(f"st & t {abn}, wahrscheinlich    " + "    ".join(f"{r} ischÄmie oder linksbelastung" for r in regions))
    if "NDT" in codes:
        leads = findings.get("NDT", [])
        p.append(_pick(rng, ["unspezifisches abnormes t", f"t {abn} in {_region_de(leads)}en ableitungen"]
                       + ([f"t flach in {leads_de(leads)}"] if leads else [])))
    if "NST_" in codes:
        leads = findings.get("NST_", [])
        p.append(_pick(rng, ["unspezifische st-strecken-verÄnderung", "unspezifische st-verÄnderung"]
                       + ([f"st-senkung in {leads_de(leads)}"] if leads else [])))
    if "STD_" in codes and not iscs and findings.get("STD_"):
        p.append(f"st-senkung in {leads_de(findings['STD_'])}")
    if "INVT" in codes and findings.get("NDT"):
        p.append(f"t neg in {leads_de(findings['NDT'])}")
    if "DIG" in codes:
        p.append(_pick(rng, ["muldenfÖrmige st-senkung (digitaliswirkung)", "digitalisveraenderung",
                             "diffuse, unspez. repol.-stÖrung (digitaliswirkung)"]))
    if "LNGQT" in codes:
        p.append("qt-verlÄngerung")
    if "NORM" in codes:
        if codes["NORM"] >= 100 and rhythm in ("SR", None) and len(p) <= 3:
            p.append(_pick(rng, ["normales ekg", "normales ekg", "ekg normal"]))
        else:
            p.append("sonst normales ekg")
    elif short and rng.random() < 0.6:
        p.append(_pick(rng, ["pathologisches ekg", "path. ekg", "ekg pathologisch"]))
    text = " ".join(p)
    if auto:
        text += " " + AUTO_SUFFIX
    return text


def _english(plan: RecordPlan, codes: dict[str, float], axis: str, hr: float, findings: dict[str, list[str]],
             rng: np.random.Generator) -> str:
    s: list[str] = []
    if "PVC" in codes:
        s.append(_pick(rng, ["premature ventricular contraction(s).", "ventricular premature beat."]))
    if "PAC" in codes:
        s.append("premature atrial contraction(s).")
    if "AFIB" in codes:
        if hr > 100:
            s.append("atrial fibrillation with rapid ventricular response.")
        elif hr < 60:
            s.append("atrial fibrillation with slow ventricular response.")
        else:
            s.append(_pick(rng, ["atrial fibrillation.", "atrial fibrillation with controlled ventricular response.",
                                 f"atrial fibrillation with moderately controlled ventricular response of {int(round(hr))} per minute."]))
    for code, text in (("SR", "sinus rhythm."), ("SBRAD", "sinus bradycardia."), ("STACH", "sinus tachycardia."),
                       ("SARRH", "sinus arrhythmia.")):
        if code in codes:
            s.append(text)
    if "1AVB" in codes or "LPR" in codes:
        s.append(_pick(rng, ["prolonged pr interval.", "first degree av block."]))
    if "LAO/LAE" in codes:
        s.append(_pick(rng, ["left atrial enlargement.", "possible left atrial enlargement."]))
    if "RAO/RAE" in codes:
        s.append(_pick(rng, ["right atrial enlargement.", "p pulmonale."]))
    axis_text = {"ALAD": _pick(rng, ["left axis deviation.", "abnormal left axis deviation."]),
                 "LAD": "borderline left axis deviation." if rng.random() < 0.25 else "",
                 "RAD": "right axis deviation.", "ARAD": "right axis deviation.", "AXR": "indeterminate axis.",
                 "MID": ""}[axis]
    if axis_text:
        s.append(axis_text)
    if "LVOLT" in codes:
        s.append("low limb lead voltage.")
    if "LAFB" in codes:
        s.append("left anterior fascicular block.")
    if "LPFB" in codes:
        s.append("left posterior fascicular block.")
    if "CRBBB" in codes:
        s.append("right bundle branch block.")
        if "LAFB" in codes or "LPFB" in codes:
            s.append("bifascicular block.")
    if "IRBBB" in codes:
        s.append(_pick(rng, ["incomplete right bundle branch block.",
                             "incomplete right bundle branch block, this is probably  a normal variant."]))
    if "CLBBB" in codes:
        s.append(_pick(rng, ["left bundle branch block.",
                             "left bundle branch block, this is most commonly due to    ischaemic heart disease."]))
    if "ILBBB" in codes:
        s.append("incomplete left bundle branch block.")
    if "IVCD" in codes:
        s.append(_pick(rng, ["non-specific intraventricular block.", "minor non-specific intraventricular delay."]))
    if "LVH" in codes:
        s.append(_pick(rng, ["left ventricular hypertrophy.", "voltages are high in chest leads suggesting lvh."]))
    elif "VCLVH" in codes:
        s.append("voltages in chest leads are at upper limit.")
    if "RVH" in codes:
        s.append("possible right ventricular hypertrophy.")
    if "SEHYP" in codes:
        s.append("deep but narrow q waves in ii, iii, avf, v4,5,6 may indicate septal hypertrophy rather than old infarction.")
    for c in codes:
        if c not in MI_CODES:
            continue
        terr = TERR[c][1]
        leads = leads_en(findings.get(c, [])) or "chest leads"
        if plan.stadium1 == "Stadium I" and codes[c] >= 50:
            s.append(f"st segments are elevated in {leads}. consistent with acute {terr} myocardial infarction.")
        elif codes[c] >= 80:
            if c == "ASMI":
                s.append(_pick(rng, ["qs complexes in v2,3 consistent with old anteroseptal    myocardial infarction.",
                                     "qs complexes in v2 and tiny r waves in v3 suggesting old anteroseptal infarct."]))
            elif c == "PMI":
                s.append("tall r waves in v1,2 suggesting posterior myocardial infarction.")
            else:
                s.append(f"q waves in {leads} consistent with old {terr}    myocardial infarction.")
        else:
            s.append(f"possible old {terr} myocardial infarction.")
    injs = [c for c in codes if c in INJ_CODES]
    if injs:
        leads = sorted({ld for c in injs for ld in findings.get(c, [])}, key=LEADS.index)
        s.append(f"st segments are depressed in {leads_en(leads) or 'several leads'}. findings are likely to be due to "
                 "ischaemic heart    disease. they may represent subendocardial infarction of uncertain age.")
    iscs = [c for c in codes if c in ISC_CODES]
    if iscs:
        leads = sorted({ld for c in iscs for ld in findings.get(c, [])}, key=LEADS.index)
        where = leads_en(leads) or "several leads"
        s.append(f"st segments are depressed in {where}.")
        s.append(f"t waves are inverted in {where}.")
        s.append(_pick(rng, ["this may be due to lv strain or ischaemia.",
                             "non-specific but consistent with myocardial ischaemia.",
                             "findings are likely to be due to ischaemic heart  disease."]))
    if "NDT" in codes:
        where = leads_en(findings.get("NDT", []))
        s.append(_pick(rng, ["non-specific t wave flattening", "minor non-specific t wave flattening"])
                 + (f" in {where}." if where else "."))
    if "NST_" in codes:
        where = leads_en(findings.get("NST_", []))
        s.append(f"minor non-specific st segment depression in {where}." if where else "non-specific st-t wave changes.")
    if "DIG" in codes:
        s.append(_pick(rng, ["st segment changes, this may be due to digitalis effect.", "early digoxin effect.",
                             "minor st changes consistent with digitalis effect."]))
    if "LNGQT" in codes:
        s.append(_pick(rng, ["prolonged qt.", "prolonged qt, this may be due to a drug effect or an  electrolyte disturbance."]))
    if "ABQRS" in codes and not any(c in MI_CODES for c in codes):
        s.append("non-specific qrs abnormality.")
    if "NORM" in codes:
        s.append("normal ecg." if codes["NORM"] >= 100 and len(s) <= 2 else
                 _pick(rng, ["otherwise normal ecg.", "no definite pathology."]))
    if "SBRAD" in codes and rng.random() < 0.5:
        s.append("the cause of the bradycardia is not evident.")
    return " ".join(x for x in s if x)


def _swedish(plan: RecordPlan, codes: dict[str, float], axis: str, hr: float, findings: dict[str, list[str]],
             rng: np.random.Generator) -> str:
    p: list[str] = []
    if "PVC" in codes:
        p.append("ventrikulÄr(a) extrasystoli(er)")
    if "PAC" in codes:
        p.append("supraventrikulÄr(a) extrasystoli(er)")
    if "AFIB" in codes:
        p.append("fÖrmaksflimmer med hÖg kammarfrekvens" if hr > 100 else "fÖrmaksflimmer/-fladder")
    for code, text in (("SR", "sinusrytm"), ("SBRAD", "sinusbradykardi"), ("STACH", "sinustachykardi"),
                       ("SARRH", "sinus arytmi")):
        if code in codes:
            p.append(text)
    if "1AVB" in codes:
        p.append("a-v block i")
    if "LAO/LAE" in codes:
        p.append("p fÖrlÄngd")
    if "RAO/RAE" in codes:
        p.append("p-pulmonale")
    p.append({"LAD": "vÄnster el-axel", "ALAD": "extrem vÄnster el-axel", "RAD": "hÖger el-axel",
              "ARAD": "extrem hÖger el-axel", "MID": "", "AXR": "obestÄmbar el-axel"}[axis])
    if "LVOLT" in codes:
        p.append("lÅga qrs amplituder i extremitetsavledningarna")
    for code, text in (("LAFB", "vÄnster anteriort hemiblock"), ("LPFB", "vÄnster posteriort hemiblock"),
                       ("CRBBB", "hÖgersidigt skÄnkelblock"), ("IRBBB", "inkomplett hÖgersidigt skÄnkelblock"),
                       ("CLBBB", "vÄnstersidigt skÄnkelblock"), ("ILBBB", "inkomplett vÄnstersidigt skÄnkelblock")):
        if code in codes:
            p.append(text)
    if "CRBBB" in codes and ("LAFB" in codes or "LPFB" in codes):
        p.append("bifascikulÄrt block")
    if "IVCD" in codes:
        p.append(_pick(rng, ["ospecifikt skÄnkelblock", "intraventrikulÄrt retledningshinder"]))
    if "LVH" in codes:
        p.append("amplitudkriterier fÖr vÄnster kammarhypertrofi" if "VCLVH" in codes
                 else _pick(rng, ["vÄnster kammarhypertrofi", "misstÄnkt vÄnster kammarhypertrofi"]))
    if "RVH" in codes:
        p.append("misstÄnkt hÖger kammarhypertrofi")
    if "SEHYP" in codes:
        p.append("misstÄnkt septumhypertrofi")
    mis = [c for c in codes if c in MI_CODES]
    if mis:
        items = []
        for c in mis:
            terr = TERR[c][2]
            if codes[c] >= 80:
                items.append(f"{terr} infarkt{_mi_stage_sv(plan, rng)}")
            else:
                items.append(f"{terr} myokardskada " + _pick(rng, ["bÖr ÖvervÄgas", "kan ej uteslutas"]))
        p.append("avvikande qrs(t) fÖrlopp    " + "    ".join(items))
    elif "ABQRS" in codes:
        p.append("avvikande qrs(t) fÖrlopp")
    injs = [c for c in codes if c in INJ_CODES]
    if injs:
        p.append("st sÄnkning, mÖjligen orsakad av    " + "    ".join(f"{TERR[c][2]} subendokardiell myokardskada" for c in injs))
    iscs = [c for c in codes if c in ISC_CODES]
    if iscs:
        terrs = [TERR[c][2] if c in TERR else _region_de(findings.get(c, [])).replace("hochlateral", "hÖg lateral") for c in iscs]
        p.append("st-t sÄnkning, sÅsom vid    " + "    ".join(f"{t} ischemi eller vÄnster belastning" for t in terrs))
    if "NDT" in codes:
        region = _region_de(findings.get("NDT", [])).replace("hochlateral", "hÖg lateral")
        p.append(_pick(rng, ["ospecifik t-fÖrÄndring", f"t-fÖrÄndring, sÅsom vid    {region} myokardaffektion"]))
    if "NST_" in codes:
        p.append(_pick(rng, ["ospecifik st-fÖrÄndring", "ospecifik st-t fÖrÄndring"]))
    if "DIG" in codes:
        p.append("st-t fÖrÄndring, sÅsom vid digitalispÅverkan")
    if "LNGQT" in codes:
        p.append("qt fÖrlÄngd")
    if "NORM" in codes:
        p.append("normalt ekg" if codes["NORM"] >= 100 and len(p) <= 2 else
                 _pick(rng, ["eljest normalt ekg", "inget sÄkert patologiskt"]))
    return " ".join(x for x in p if x)


def edit_note(plan: RecordPlan, rng: np.random.Generator) -> str:
    """A cardiologist's note: mixed case, real umlauts, German, SCP codes, sometimes (sex,age)."""
    diag = [(c, v) for c, v in plan.codes.items() if c not in ("SR", "SBRAD", "STACH", "SARRH", "AFIB")]
    first = ", ".join(f"{c} {int(v)}" if v >= 50 and i == 0 else c for i, (c, v) in enumerate(diag[:3])) or "NORM 100"
    extras = []
    if rng.random() < 0.3 and plan.age is not None:
        extras.append(f"({'m' if plan.sex == 0 else 'f'},{plan.true_age})")
    if rng.random() < 0.3:
        extras.append(_pick(rng, ["schlechte Qualität V2,V3,V5", "zusätzlich Tachykardie", "Sokolow 2,6", "rqsIII"]))
    second = "(" + ", ".join(f"{c} {int(v)}" if v >= 50 else c for c, v in diag[:2]) + ")" if diag else "(NORM 100)"
    return "Edit: " + ", ".join([first] + extras) + ", " + second


def make_report(plan: RecordPlan, axis: str, hr: float, findings: dict[str, list[str]], seed: int) -> str:
    """The record's report text (the ptbxl_database.csv ``report`` cell), consistent with plan.codes."""
    rng = stream(seed, 20, plan.ecg_id)
    build = {"de": _german, "en": _english, "sv": _swedish}[plan.language]
    text = build(plan, plan.codes, axis, hr, findings, rng)
    if plan.language == "de" and rng.random() < 0.09:
        text = text.translate(TRANSLIT)  # about 9 % of the German reports write ae/oe/ue
    elif "fÜr" in text and rng.random() < 0.1:
        text = text.replace("fÜr", "f#r")  # an encoding slip seen in PTB-XL
    if rng.random() < 0.05 and " " in text:
        words = text.split(" ")
        k = int(rng.integers(1, len(words)))
        text = " ".join(words[:k]) + " " * int(rng.integers(2, 6)) + " ".join(words[k:])
    text = text[:MAX_REPORT]
    if plan.edit_note:
        text = text + " " + edit_note(plan, rng)
    return text
