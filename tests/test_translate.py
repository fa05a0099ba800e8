"""ecglm translate: report parsing, language detection, the glossary backend, the stage, the figures.

Real-data tests read ../shared/ptbxl-sample in place (skipped where absent); the figure tests also
need Debian's hunspell-de-de, hunspell-sv and hunspell-en-us (skipped with the install line).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecglm.cli import main
from ecglm.text.translate import hunspell
from ecglm.text.translate.evaluation import (
    HELD_OUT,
    REST,
    concepts,
    glossary_figures,
    read_hand_labels,
    sample_reports,
)
from ecglm.text.translate.glossary import TRUNCATED_MARK, Glossary, load_glossary, tokenize
from ecglm.text.translate.langdetect import LanguageDetector, detect_language
from ecglm.text.translate.reports import AUTO_TAIL_MARK, fold, parse_report, repair
from ecglm.text.translate.stage import translate_reports
from ecglm.text.translate.translator import GlossaryTranslator, Hint, Translator

LABELS = Path(__file__).parent / "data" / "language_labels.csv"
SPACES = " " * 26  # PTB-XL pads the auto-report tail with runs of spaces


@pytest.fixture(scope="module")
def glossary() -> Glossary:
    return load_glossary()


@pytest.fixture(scope="module")
def translator(glossary) -> GlossaryTranslator:
    return GlossaryTranslator(glossary)


@pytest.fixture(scope="module")
def dictionaries():
    missing = hunspell.missing_message()
    if missing:
        pytest.skip(missing)
    return hunspell.load_all()


def en(translator, text: str, language: str | None = None, truncated: bool = False) -> str:
    return translator.translate([text], [Hint(language, truncated)])[0]


# --- reports.py ------------------------------------------------------------------------------
class TestParseReport:
    def test_auto_tail_full(self):
        p = parse_report(f"sinusrhythmus normales ekg 4.46{SPACES}unbestÄtigter bericht")
        assert p.body == "sinusrhythmus normales ekg"
        assert p.auto_unconfirmed and not p.truncated and p.edit_note is None

    @pytest.mark.parametrize(
        "tail", ["4.46", "4.46 u", "4.46 unbe", f"4.46{SPACES}unbestÄti", "4.46 unbestaetigter ber", "4.46 UNBESTÄTIGTER BERICHT"]
    )
    def test_auto_tail_cut_variants(self, tail):
        p = parse_report(f"vorhofflimmern linkstyp {tail}")
        assert p.auto_unconfirmed and p.body == "vorhofflimmern linkstyp"

    def test_number_that_is_no_tail_is_kept(self):
        p = parse_report("st-senkung 4.46 mm in v5")
        assert not p.auto_unconfirmed and p.body == "st-senkung 4.46 mm in v5"

    def test_edit_note_split_and_tail_before_it(self):
        p = parse_report(f"sinusrhythmus 4.46{SPACES}unbestÄtigter bericht Edit: NORM 100,   (NORM 100)")
        assert p.body == "sinusrhythmus" and p.auto_unconfirmed
        assert p.edit_note == "NORM 100, (NORM 100)"

    def test_empty_edit_note_and_missing_report(self):
        assert parse_report("sinus rhythm. Edit: ").edit_note == ""
        assert parse_report(None).body == "" and parse_report(None).edit_note is None

    def test_truncation_flag_counts_text_before_the_note(self):
        body = ("sinusrhythmus lagetyp normal " * 10)[:255]
        assert parse_report(body).truncated
        assert parse_report(body + " Edit: NORM 100").truncated
        assert not parse_report(body[:200] + " Edit: " + "x" * 80).truncated

    def test_runs_of_spaces_normalised(self):
        assert parse_report("  qrs(t) abnorm    inferiorer infarkt  ").body == "qrs(t) abnorm inferiorer infarkt"

    def test_code_page_artefacts_repaired(self):
        assert repair("r-s #bergang, f#r") == "r-s übergang, für"
        assert repair("schweiáausbruch") == "schweißausbruch"
        assert "ó" not in repair("sinusrytm ó¿ st ó¬ t")

    @given(st.text(max_size=60))
    @settings(max_examples=200, deadline=None)
    def test_fold_is_idempotent(self, text):
        assert fold(fold(text)) == fold(text)

    @given(st.text(max_size=300))
    @settings(max_examples=200, deadline=None)
    def test_parse_never_fails_and_body_is_normalised(self, text):
        p = parse_report(text)
        assert p.body == " ".join(p.body.split())


# --- langdetect.py ---------------------------------------------------------------------------
class TestLanguageDetection:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("sinusrhythmus lagetyp normal normales ekg", "de"),
            ("vorhofflimmern  ischÄmie    oder linksbelastung", "de"),  # capital umlaut, runs of spaces
            ("sinusrhythmus ueberdrehter linkstyp leitungsstoerung", "de"),  # ae/oe/ue spelling
            ("ventrikulÄre extrasystole(n) sinus arrhythmie", "de"),  # shares words with English
            ("llt sr normales ekg", "de"),
            ("fÖrmaksflimmer vÄnster el-axel", "sv"),
            ("sinusrytm normalt ekg", "sv"),
            ("pacemaker ekg", "sv"),
            ("sinus rhythm. left axis deviation. normal ecg.", "en"),
            ("atrial fibrillation with rapid ventricular response", "en"),
            ("", "en"),
            ("4.46", "en"),
        ],
    )
    def test_detects(self, text, expected):
        assert detect_language(text) == expected

    def test_edit_note_is_ignored(self):
        assert detect_language("sinus rhythm. normal ecg. Edit: NORM 100, schlechte Qualität V2,V3,V5") == "en"
        assert detect_language("sinusrytm normalt ekg Edit: zusätzlich IRBBB, wahrscheinlich normal") == "sv"

    def test_deterministic_and_total(self):
        det = LanguageDetector()
        for text in ["sinusrhythmus", "sinus rhythm", "sinusrytm", "qrs(t) v1-v3", "xyz qwrt"]:
            assert det.detect(text) == det.detect(text) in ("de", "en", "sv")

    @given(st.text(max_size=200))
    @settings(max_examples=100, deadline=None)
    def test_never_fails(self, text):
        assert detect_language(text) in ("de", "en", "sv")


# --- glossary.py -----------------------------------------------------------------------------
class TestGlossary:
    def test_longest_phrase_wins(self, glossary):
        assert glossary.translate("lagetyp normal", "de").text == "normal axis"
        assert glossary.translate("ueberdrehter linkstyp", "de").text == "left axis deviation"
        assert glossary.translate("extrem ueberdrehter rechtstyp", "de").text == "extreme right axis deviation"
        assert glossary.translate("tachykardes vorhofflimmern", "de").text == (
            "atrial fibrillation with rapid ventricular response"
        )

    def test_spelling_variants_are_one_word(self, glossary):
        for text in ("ischÄmie", "ischämie", "ischaemie", "ISCHÄMIE"):
            assert glossary.translate(text, "de").text == "ischaemia"
        assert glossary.translate("unvollstÄndiger rechtsschenkelblock", "de").text == (
            glossary.translate("unvollstaendiger  rechtsschenkelblock", "de").text
        )

    @pytest.mark.parametrize(
        "text, expected",
        [
            ("inferiorer infarkt alter unbest.", "inferior infarction age undetermined"),
            ("t neg in v1-4 (fragl. digitalis)", "t negative in v1-4 (questionable digitalis)"),
            ("v.a. linkshypertrophie", "suspected left ventricular hypertrophy"),
            ("vorhofsüberlastung li.", "atrial overload left"),
            ("vorhofsüberlastung re.", "atrial overload right"),
            ("path.ekg", "abnormal ecg"),
            ("path. ekg", "abnormal ecg"),
            ("schrittmacher ekg", "pacemaker ecg"),
            ("mögl. akut", "possibly acute"),
            ("kompl. rsb", "complete right bundle branch block"),
            ("av-block 1.grades", "first-degree av block"),
            ("ventr. es uniform", "ventricular extrasystoles uniform"),
        ],
    )
    def test_abbreviations(self, glossary, text, expected):
        assert glossary.translate(text, "de").text == expected

    def test_numbers_leads_and_drugs_are_kept(self, glossary):
        result = glossary.translate("vorhofflattern 2:1 unter 3x1 cordichin 0,2 st-senkung in v4-v6, avf", "de")
        assert result.text == "atrial flutter 2:1 on 3x1 cordichin 0,2 st depression in v4-v6, avf"
        assert result.untranslated == []

    def test_stems_compounds_and_typos(self, glossary):
        assert glossary.translate("anteroseptalen", "de").text == "anteroseptal"
        assert glossary.translate("linkskammmerhypertrophie", "de").text == "left ventricular hypertrophy"
        assert glossary.translate("pathologsiches ekg", "de").text == "abnormal ecg"
        assert glossary.translate("repol.", "de").text == "repolarisation"

    def test_unknown_word_is_reported_not_silently_passed(self, glossary):
        result = glossary.translate("sinusrhythmus blubberwort", "de")
        assert result.text == "sinus rhythm blubberwort"
        assert result.untranslated == ["blubberwort"]

    def test_english_words_inside_german_are_not_reported(self, glossary):
        result = glossary.translate("periphere low voltage", "de")
        assert result.text == "peripheral low voltage" and result.untranslated == []

    def test_truncated_last_word(self, glossary):
        assert glossary.translate("ischämie oder linksbelastun", "de", truncated=True).text == (
            "ischaemia or left ventricular strain"
        )
        cut = glossary.translate("sinusrhythmus xq", "de", truncated=True)
        assert cut.text == f"sinus rhythm {TRUNCATED_MARK}" and cut.untranslated == []
        # the same fragment in a report that was NOT cut is an unknown word
        assert glossary.translate("sinusrhythmus xqzv", "de").untranslated == ["xqzv"]

    def test_edit_note_keeps_codes_translates_words(self, glossary):
        result = glossary.translate("RAO, zusätzlich IRBBB, RVH, (RVH 100, RAO, IRBBB) (m,19) rSIII", "de")
        assert result.text == "RAO, additionally IRBBB, RVH, (RVH 100, RAO, IRBBB) (m,19) rSIII"
        assert glossary.translate("NORM 100, schlechte Qualität V2,V3,V5", "de").text == (
            "NORM 100, poor quality V2,V3,V5"
        )

    def test_swedish(self, glossary):
        assert glossary.translate("sinusrytm vÄnster el-axel eljest normalt ekg", "sv").text == (
            "sinus rhythm left axis deviation otherwise normal ecg"
        )
        assert glossary.translate("a-v block i", "sv").text == "first-degree av block"
        assert glossary.translate("lÅga qrs amplituder i extremitetsavledningarna", "sv").text == (
            "low qrs amplitudes in the limb leads"
        )

    def test_conflicting_entries_are_refused(self, tmp_path, glossary):
        for name in ("sv.tsv", "abbreviations.tsv", "keep.tsv", "en_words.txt"):
            (tmp_path / name).write_text((glossary.directory / name).read_text(encoding="utf-8"), encoding="utf-8")
        (tmp_path / "de.tsv").write_text("ischämie\tischaemia\nischaemie\tischemia\n", encoding="utf-8")
        from ecglm.core.errors import StageError

        with pytest.raises(StageError, match=r"de\.tsv:2: 'ischaemie' is already translated"):
            Glossary(tmp_path)

    def test_review_rows_most_frequent_first(self, glossary):
        import collections

        usage = collections.Counter()
        for text in ["sinusrhythmus normales ekg", "sinusrhythmus linkstyp", "vorhofflimmern"]:
            glossary.translate(text, "de", usage=usage)
        rows = glossary.review_rows(usage)
        assert rows[0]["source"] == "sinusrhythmus" and rows[0]["count"] == 2
        assert [r["count"] for r in rows[:4]] == [2, 1, 1, 1]
        assert {r["source"] for r in rows[1:4]} == {"normales ekg", "linkstyp", "vorhofflimmern"}
        assert {r["count"] for r in rows[4:]} == {0}

    @given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzäöüÄÖÜ -.,()/&0123456789", max_size=120))
    @settings(max_examples=150, deadline=None)
    def test_every_word_accounted_for(self, glossary, text):
        """Property: a source word left verbatim in the English is kept, English, or reported."""
        result = glossary.translate(text, "de")
        source_words = {t.key for t in tokenize(text) if t.is_word}
        for token in tokenize(result.text.replace(TRUNCATED_MARK, "")):
            if token.is_word and token.key in source_words and not glossary.is_kept(token):
                assert glossary.is_english(token.key) or token.text.lower() in result.untranslated

    def test_glossary_english_is_english(self, glossary, dictionaries):
        """Every English word the glossary writes is a word of en_US or of en_words.txt."""
        english_file = {
            fold(w.strip()) for w in (glossary.directory / "en_words.txt").read_text(encoding="utf-8").splitlines()
        }
        bad = set()
        for lang in ("de", "sv"):
            for target in glossary.phrases[lang].values():
                for token in tokenize(target):
                    if token.is_word and not glossary.is_kept(token):
                        if token.key not in english_file and not dictionaries["en"].knows(token.text.lower()):
                            bad.add(token.text)
        assert not bad, f"glossary English not in en_US nor en_words.txt: {sorted(bad)}"


def test_translator_protocol(translator):
    assert isinstance(translator, Translator)
    assert translator.name == "glossary" and translator.model.startswith("glossary-")
    assert translator.translate(["sinus   rhythm.", "sinusrytm"]) == ["sinus rhythm.", "sinus rhythm"]


# --- the stage through the CLI -------------------------------------------------------------------
def write_csv(path: Path, rows: list[tuple[int, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ecg_id", "patient_id", "device", "report", "strat_fold"])
        for ecg_id, report in rows:
            writer.writerow([ecg_id, 1.0, "CS-12   E", report, 1])
    return path


STAGE_ROWS = [
    (1, "sinusrhythmus lagetyp normal normales ekg"),
    (2, f"tachykardes vorhofflimmern ueberdrehter linkstyp 4.46{SPACES}unbestÄtigter bericht"),
    (3, "sinusrytm vÄnster el-axel eljest normalt ekg"),
    (4, "sinus rhythm.  normal ecg. Edit: NORM 100, schlechte Qualität V2,V3,V5"),
    (5, "sinusrhythmus blubberwort linkstyp"),
    (7, "sinusrhythmus lagetyp normal normales ekg"),
]


def test_stage_cli_outputs(tmp_path, capsys):
    import polars as pl

    out = tmp_path / "text" / "reports_en.parquet"
    review = tmp_path / "review.csv"
    code = main(["translate", "--database", str(write_csv(tmp_path / "db.csv", STAGE_ROWS)), "--out", str(out),
                 "--review", str(review)])
    assert code == 0, capsys.readouterr().err
    frame = pl.read_parquet(out)
    assert frame.columns == ["ecg_id", "language", "report", "report_en", "edit_note", "edit_note_en",
                             "auto_unconfirmed", "truncated", "backend", "model"]
    assert frame.schema["ecg_id"] == pl.Int32 and frame.schema["auto_unconfirmed"] == pl.Boolean
    rows = {r["ecg_id"]: r for r in frame.to_dicts()}
    assert [rows[i]["language"] for i in (1, 2, 3, 4, 5, 7)] == ["de", "de", "sv", "en", "de", "de"]
    assert rows[1]["report_en"] == rows[7]["report_en"] == "sinus rhythm normal axis normal ecg"
    assert rows[2]["report_en"] == (
        f"atrial fibrillation with rapid ventricular response left axis deviation {AUTO_TAIL_MARK}"
    )
    assert rows[2]["auto_unconfirmed"] and not rows[1]["auto_unconfirmed"]
    assert rows[3]["report_en"] == "sinus rhythm left axis deviation otherwise normal ecg"
    assert rows[4]["report"] == STAGE_ROWS[3][1]  # the source as in the file
    assert rows[4]["report_en"] == "sinus rhythm. normal ecg."
    assert (rows[4]["edit_note"], rows[4]["edit_note_en"]) == (
        "NORM 100, schlechte Qualität V2,V3,V5", "NORM 100, poor quality V2,V3,V5")
    assert rows[1]["edit_note"] is None and rows[1]["edit_note_en"] is None
    assert set(frame["backend"]) == {"glossary"}
    with open(out.with_name("reports_en.untranslated.csv"), newline="", encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == [{"term": "blubberwort", "count": "1", "example_ecg_id": "5"}]
    with open(review, newline="", encoding="utf-8") as fh:
        review_rows = list(csv.DictReader(fh))
    counts = [int(r["count"]) for r in review_rows]
    assert counts == sorted(counts, reverse=True)
    assert {"language": "de", "source": "lagetyp normal", "english": "normal axis", "count": "2"} in review_rows


def test_stage_edge_cases(glossary, translator):
    detector = LanguageDetector(glossary)
    rows = translate_reports(
        [(1, f"4.46{SPACES}unbestÄtigter bericht"), (2, ""), (3, "Edit: NORM 100"),
         (4, "sinus rhythm. t waves are low or flat in these leads. this may be du")],
        translator, glossary, detector,
    ).rows
    assert (rows[0]["language"], rows[0]["report_en"], rows[0]["auto_unconfirmed"]) == ("de", AUTO_TAIL_MARK, True)
    assert (rows[1]["language"], rows[1]["report_en"]) == ("en", "")
    assert (rows[2]["report_en"], rows[2]["edit_note"], rows[2]["edit_note_en"]) == ("", "NORM 100", "NORM 100")
    assert rows[3]["report_en"] == rows[3]["report"]  # English passes through, cut word and all


def test_stage_reads_records_parquet(tmp_path):
    import polars as pl

    records = tmp_path / "records.parquet"
    pl.DataFrame(
        {"ecg_id": [10, 11], "report": ["sinusrhythmus normales ekg", None], "age": [50.0, 60.0]},
        schema={"ecg_id": pl.Int32, "report": pl.Utf8, "age": pl.Float64},
    ).write_parquet(records)
    out = tmp_path / "reports_en.parquet"
    assert main(["translate", "--records", str(records), "--out", str(out)]) == 0
    frame = pl.read_parquet(out).sort("ecg_id")
    assert frame["report_en"].to_list() == ["sinus rhythm normal ecg", ""]


@pytest.mark.parametrize(
    "content, message",
    [
        ("ecg_id,report\n1,sinusrhythmus\n1,linkstyp\n", "ecg_id 1 appears twice"),
        ("ecg_id,text\n1,sinusrhythmus\n", "column(s) report missing"),
        ("ecg_id,report\n,sinusrhythmus\n", "row 1 has no valid ecg_id"),
    ],
)
def test_stage_bad_input_names_file(tmp_path, capsys, content, message):
    db = tmp_path / "bad.csv"
    db.write_text(content, encoding="utf-8")
    out = tmp_path / "reports_en.parquet"
    assert main(["translate", "--database", str(db), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(db) in err and message in err
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


# --- golden tests on real reports ------------------------------------------------------------
GOLDEN = {
    # auto-report tail, capital umlauts
    5158: ("de", True, False,
           "accelerated av-rhythm left axis deviation qrs(t) abnormal inferior infarction possibly acute st & t "
           "abnormal, probably high lateral ischaemia or left ventricular strain (unconfirmed automatic report)"),
    # auto-report tail cut at 255 characters ("4.46 ... unbe")
    16282: ("de", True, True,
            "atrial fibrillation/flutter left axis deviation qrs(t) abnormal anterior infarction age undetermined "
            "inferior infarction probably old st & t abnormal, probably high lateral ischaemia or left ventricular "
            "strain (unconfirmed automatic report)"),
    # 255-character report cut mid-word ("linksbelastun")
    7573: ("de", False, True,
           "atrial fibrillation/flutter normal axis incomplete right bundle branch block moderate voltage criteria "
           "for left ventricular hypertrophy qrs(t) abnormal inferior infarction age undetermined st & t abnormal, "
           "probably anterolateral ischaemia or left ventricular strain"),
    # Swedish, cut mid-word ("vÄns")
    181: ("sv", False, True,
          "ventricular extrasystole(s) atrial fibrillation with rapid ventricular response extreme left axis "
          "deviation abnormal qrs(t) complex anterior infarction possibly recent inferior infarction probably old "
          "st-t depression, as in high lateral ischaemia or left"),
    # ae/oe/ue spellings and an abbreviation glued to the next word ("rep.stoerungen")
    217: ("de", False, False,
          "sinus rhythm normal axis atrial overload probably non-specific myocardial damage with repolarisation "
          "disturbances borderline finding"),
    6269: ("de", False, False,
           "atrial fibrillation normal-rate left axis deviation left anterior fascicular block right bundle branch "
           "block complete abnormal ecg"),
    # Swedish with capital umlauts
    152: ("sv", False, False,
          "atrial fibrillation/flutter right axis deviation low qrs amplitudes in the limb leads moderate voltage "
          "criteria for left ventricular hypertrophy abnormal qrs(t) complex high lateral infarction should be "
          "considered t wave change, as in inferior myocardial involvement"),
    # Edit: note in an English report
    315: ("en", False, False, "sinus rhythm. normal ecg."),
}
GOLDEN_NOTES = {
    315: ("NORM 100, schlechte Qualität V2,V3,V5", "NORM 100, poor quality V2,V3,V5"),
    87: ("INJIN, IRBBB, (m,19) , (IRBBB, NDT)", "INJIN, IRBBB, (m,19) , (IRBBB, NDT)"),
    222: ("RAO, zusätzlich IRBBB, RVH, (RVH 100, RAO, IRBBB)", "RAO, additionally IRBBB, RVH, (RVH 100, RAO, IRBBB)"),
}


@pytest.fixture(scope="module")
def real_rows(ptbxl_sample, glossary):
    detector = LanguageDetector(glossary)
    pairs = dict(sample_reports(ptbxl_sample))
    ids = sorted(set(GOLDEN) | set(GOLDEN_NOTES))
    result = translate_reports([(i, pairs[i]) for i in ids], GlossaryTranslator(glossary, detector), glossary, detector)
    return {r["ecg_id"]: r for r in result.rows}


@pytest.mark.parametrize("ecg_id", sorted(GOLDEN))
def test_golden_real_reports(real_rows, ecg_id):
    language, auto, truncated, english = GOLDEN[ecg_id]
    row = real_rows[ecg_id]
    assert (row["language"], row["auto_unconfirmed"], row["truncated"]) == (language, auto, truncated)
    assert row["report_en"] == english


@pytest.mark.parametrize("ecg_id", sorted(GOLDEN_NOTES))
def test_golden_edit_notes(real_rows, ecg_id):
    assert (real_rows[ecg_id]["edit_note"], real_rows[ecg_id]["edit_note_en"]) == GOLDEN_NOTES[ecg_id]


# --- the three figures on both parts ---------------------------------------------------------
@pytest.fixture(scope="module")
def figures(ptbxl_sample, dictionaries):
    return glossary_figures(ptbxl_sample, LABELS, dictionaries)[0]


def test_hand_labels_cover_enough_reports(ptbxl_sample):
    labels = read_hand_labels(LABELS)
    ids = {i for i, _ in sample_reports(ptbxl_sample)}
    assert len(labels) >= 100 and set(labels) <= ids
    assert set(labels.values()) == {"de", "en", "sv"}


@pytest.mark.parametrize("part", [HELD_OUT, REST])
def test_language_detection_agrees(figures, part):
    fig = figures[part]
    assert fig.language_total > 500 and fig.language_rate >= 0.99, fig.disagreements


@pytest.mark.parametrize("part", [HELD_OUT, REST])
def test_no_german_or_swedish_left(figures, part):
    fig = figures[part]
    assert fig.translated > 300 and fig.clean_rate >= 0.98, fig.leftovers


@pytest.mark.parametrize("part", [HELD_OUT, REST])
def test_clinical_concepts_kept(figures, part):
    fig = figures[part]
    assert fig.concepts_total > 1000 and fig.concept_rate >= 0.95, fig.lost_concepts


def test_concept_detectors():
    assert concepts("tachykardes vorhofflimmern ueberdrehter linkstyp", "de") == {
        "tachycardia", "atrial fibrillation", "left axis"}
    assert concepts("fÖrmaksflimmer hÖgersidigt skÄnkelblock", "sv") == {
        "atrial fibrillation", "right bundle branch block"}
    assert concepts("atrial fibrillation with rapid ventricular response. left axis deviation.", "en") == {
        "tachycardia", "atrial fibrillation", "left axis"}
    assert concepts("sinus rhythm. normal ecg.", "en") == {"sinus rhythm"}


def test_held_out_fifth_kept_out_of_the_glossary(ptbxl_sample, glossary):
    """Every glossary word that occurs in the held-out fifth (ecg_id % 5 == 0) also occurs in the rest,
    whole or as a part of a compound there (ecglm/text/translate/glossary/README.md)."""
    held, rest = set(), set()
    for ecg_id, report in sample_reports(ptbxl_sample):
        (held if ecg_id % 5 == 0 else rest).update(t.key for t in tokenize(report) if t.is_word)
    leaked = sorted(
        w
        for lang in ("de", "sv")
        for w in glossary.vocabulary(lang)
        if w in held and w not in rest and not any(w in r for r in rest if len(r) > len(w))
    )
    assert not leaked, f"glossary words seen only in the held-out fifth: {leaked}"
