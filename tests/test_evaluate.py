"""`ecglm evaluate` and `ecglm evaluate-baseline` on a small hand-made store, with a tiny random Llama.

Everything runs on CPU: tests/tiny_llm.py builds the LLM, the encoder is a ResNet1d18 of base width 4,
the signals are 64 samples per lead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from tiny_llm import build_tiny_llm

from ecglm import cli
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.eval.baselines import evaluate_baseline, majority_class, training_class_counts
from ecglm.eval.evaluate import (
    INTERVAL_METRICS,
    TextOnlyLM,
    classification_metrics,
    evaluate_zero_shot,
    generated_report,
    load_eval_set,
    predictions_from_generations,
    shuffle_permutation,
    single_class_index,
    table_metric,
    task_letters,
)
from ecglm.models.encoder import ResNet1d18
from ecglm.models.llm import load_llm
from ecglm.models.multimodal import ECGLM, generate_greedy
from ecglm.text.prompts import ECG_TOKEN, Patient, answer_text, likelihood_text, report_prompt, zero_shot_prompt

T = 64

# (split, diagnostic_superclass, rhythm, form): the test split holds 3 NORM, 2 MI, 1 STTC, 1 CD, 1 HYP
# single-class ECGs, one with two classes and one with none; the training split's majority is MI.
ROWS = [
    ("train", ["MI"], ["SR"], ["ABQRS"]),
    ("train", ["MI"], ["SR"], []),
    ("train", ["MI"], ["AFIB"], ["NDT"]),
    ("train", ["NORM"], ["SR"], []),
    ("train", ["CD", "MI"], ["STACH"], ["NDT"]),
    ("val", ["NORM"], ["SR"], []),
    ("val", ["HYP"], ["SBRAD"], ["LNGQT"]),
    ("test", ["NORM"], ["SR"], []),
    ("test", ["MI"], ["AFIB"], ["ABQRS"]),
    ("test", ["NORM"], ["SR", "PACE"], ["NDT"]),
    ("test", ["STTC"], ["STACH"], ["NST_"]),
    ("test", ["CD"], ["SBRAD"], ["DIG"]),
    ("test", ["HYP"], ["SARRH"], ["LNGQT"]),
    ("test", ["MI"], ["SR"], ["ABQRS", "NDT"]),
    ("test", ["NORM"], [], []),
    ("test", ["NORM", "STTC"], ["AFIB", "SR"], ["NST_"]),
    ("test", [], ["SR"], None),
]
TEST_SINGLE_DIAGNOSTIC = [7, 8, 9, 10, 11, 12, 13, 14]  # rows of the single-class test ECGs (diagnostic)


def write_store(folder: Path, rows=ROWS, seed: int = 0) -> dict[str, Path]:
    """records.parquet, signals.npy (int16 [N, 12, T], T short: a name that states no rate) and findings.parquet in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(rows)
    ecg_ids = [1000 + 3 * i for i in range(n)]
    records = pl.DataFrame(
        {
            "ecg_id": pl.Series(ecg_ids, dtype=pl.Int32),
            "split": [r[0] for r in rows],
            "age": pl.Series([40 + i for i in range(n)], dtype=pl.Int16),
            "age_over_89": [False] * n,
            "sex": ["male" if i % 2 else "female" for i in range(n)],
            "height": pl.Series([170.0 if i % 3 else None for i in range(n)], dtype=pl.Float32),
            "weight": pl.Series([None if i % 4 else 80.0 for i in range(n)], dtype=pl.Float32),
            "diagnostic_superclass": pl.Series([r[1] for r in rows], dtype=pl.List(pl.String)),
            "rhythm": pl.Series([r[2] for r in rows], dtype=pl.List(pl.String)),
            "form": pl.Series([r[3] for r in rows], dtype=pl.List(pl.String)),
        }
    )
    rng = np.random.default_rng(seed)
    signals = rng.integers(-1500, 1500, size=(n, len(LEADS), T)).astype(np.int16)  # [N, 12, T] uV
    findings = pl.DataFrame(
        {
            "ecg_id": pl.Series(ecg_ids, dtype=pl.Int32),
            "general": [None if i % 2 else "prolonged qt" for i in range(n)],
            **{f"lead_{lead}": [("st elevation" if (i + j) % 5 == 0 else None) for i in range(n)] for j, lead in enumerate(LEADS)},
            "findings": pl.Series([[] for _ in range(n)], dtype=pl.List(pl.String)),
        }
    )
    paths = {"records": folder / "records.parquet", "signals": folder / "signals.npy", "findings": folder / "findings.parquet"}
    records.write_parquet(paths["records"])
    np.save(paths["signals"], signals)
    findings.write_parquet(paths["findings"])
    return paths


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny")


@pytest.fixture(scope="module")
def llm(llm_dir):
    return load_llm(llm_dir, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, Path]:
    return write_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def align_dir(tmp_path_factory, llm) -> Path:
    """A saved ECG-LM (ResNet1d18 width 4 + linear projector, scaled up so the ECG visibly moves the logits)."""
    model, tokenizer = llm
    torch.manual_seed(3)
    ecglm = ECGLM(ResNet1d18(n_classes=5, base_width=4), model, tokenizer.convert_tokens_to_ids(ECG_TOKEN))
    with torch.no_grad():
        ecglm.projector.proj.weight.mul_(2000.0)
    return ecglm.save(tmp_path_factory.mktemp("align") / "full")


# ------------------------------------------------------------------------------------ evaluation set


def test_eval_set_holds_single_class_test_ecgs_and_counts(store):
    es = load_eval_set(store["records"], "diagnostic")
    assert es.rows.tolist() == TEST_SINGLE_DIAGNOSTIC
    assert es.ecg_ids.tolist() == [1000 + 3 * i for i in TEST_SINGLE_DIAGNOSTIC]
    assert es.counts() == {"NORM": 3, "MI": 2, "STTC": 1, "CD": 1, "HYP": 1}
    assert es.y.tolist() == [0, 1, 0, 2, 3, 4, 1, 0]
    assert (es.n_multi_class, es.n_no_class) == (1, 1)
    # rhythm: ["SR", "PACE"] counts as SR (PACE is no option); [] and ["AFIB", "SR"] are left out
    rh = load_eval_set(store["records"], "rhythm")
    assert rh.rows.tolist() == [7, 8, 9, 10, 11, 12, 13, 16]
    assert rh.counts() == {"SR": 4, "STACH": 1, "SBRAD": 1, "AFIB": 1, "SARRH": 1}
    form = load_eval_set(store["records"], "form")
    assert form.counts() == {"ABQRS": 1, "NDT": 1, "NST_": 2, "DIG": 1, "LNGQT": 1}
    assert (form.n_multi_class, form.n_no_class) == (1, 3)  # a null list holds no class


def test_single_class_index_ignores_other_labels():
    idx, y, multi, none = single_class_index([["SR", "PACE"], None, ["PACE"], ["AFIB", "SR"], ["SARRH"]], ["SR", "AFIB", "SARRH"])
    assert idx.tolist() == [0, 4] and y.tolist() == [0, 2] and (multi, none) == (1, 2)


def test_eval_set_without_a_qualifying_ecg_is_an_error(tmp_path):
    paths = write_store(tmp_path, rows=[("train", ["NORM"], ["SR"], []), ("test", ["NORM", "MI"], ["SR"], [])])
    with pytest.raises(StageError, match="no test-split ECG has exactly one"):
        load_eval_set(paths["records"], "diagnostic")


# ------------------------------------------------------------------------------------------- metrics


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 3, 4, 4, 2, 0, 2])
    probs = rng.dirichlet(np.ones(5), size=len(y_true))
    m = classification_metrics(y_true, y_pred, probs, "diagnostic")
    assert m["n"] == 12
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["precision"] == pytest.approx(precision_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(recall_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=range(5)).tolist()
    assert m["confusion_matrix"][0] == [2, 1, 0, 0, 0]  # rows true, columns predicted
    assert m["predicted_options"] == {"A": 3, "B": 3, "C": 3, "D": 1, "E": 2}
    assert m["confusion_order"] == ["A", "B", "C", "D", "E"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_bootstrap_metrics_equal_the_reported_ones_on_all_rows(seed):
    """The numpy metrics the bootstrap recomputes on each draw are scikit-learn's (unanswered rows included)."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, size=40)
    y_pred = np.where(rng.random(40) < 0.6, y_true, rng.integers(-1, 5, size=40))
    probs = rng.dirichlet(np.ones(5), size=40)
    probs[:8] = 0.2  # ties
    drawn = rng.integers(0, 40, size=40)  # a bootstrap draw: rows repeated and left out
    for rows in (np.arange(40), drawn):
        m = classification_metrics(y_true[rows], y_pred[rows], probs[rows], "diagnostic")
        for name in INTERVAL_METRICS:
            assert table_metric(name, y_true, y_pred, probs, 5)(rows) == pytest.approx(m[name]), name


def test_intervals_resample_patients_and_bracket_the_estimates(tmp_path):
    paths = write_store(tmp_path)
    records = pl.read_parquet(paths["records"])
    records.with_columns(patient_id=pl.Series([i // 2 for i in range(records.height)], dtype=pl.Float64)).write_parquet(
        paths["records"])
    doc = evaluate_baseline("majority", paths["records"], "diagnostic")
    intervals = doc["intervals"]
    assert intervals["resampled"] == "patient_id" and intervals["reps"] == 1000 and intervals["level"] == 0.95
    assert intervals["groups"] == len({i // 2 for i in TEST_SINGLE_DIAGNOSTIC})
    for name in ("accuracy", "balanced_accuracy", "f1"):
        low, high = intervals["metrics"][name]
        assert low <= doc[name] <= high and low < high, name
    assert evaluate_baseline("majority", paths["records"], "diagnostic")["intervals"] == intervals  # seeded
    # without patient_id the ECGs are the unit, said so
    assert evaluate_baseline("majority", write_store(tmp_path / "plain")["records"], "diagnostic")["intervals"][
        "resampled"] == "ecg_id"


def test_collapse_onto_one_letter_is_visible_and_absent_class_gives_null_auc():
    y_true = np.array([0, 1, 2, 0, 1, 2])  # D and E absent
    y_pred = np.full(6, 2)
    probs = np.tile([0.1, 0.1, 0.6, 0.1, 0.1], (6, 1))
    m = classification_metrics(y_true, y_pred, probs, "rhythm")
    assert m["predicted_options"] == {"A": 0, "B": 0, "C": 6, "D": 0, "E": 0}
    assert m["predicted_fraction"]["C"] == 1.0 and m["max_predicted_fraction"] == 1.0
    assert m["accuracy"] == pytest.approx(2 / 6)
    assert m["precision"] == pytest.approx(precision_score(y_true, y_pred, labels=range(5), average="macro", zero_division=0))
    assert m["macro_auc"] is None
    assert m["per_class_auc"]["AFIB"] is None and m["per_class_auc"]["SR"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------- scoring


def _manual_next_token(llm_model, tokenizer, prompt: str, letters) -> np.ndarray:
    """Log-probabilities of " A" ... " E" after ``prompt`` from a plain forward pass of the LLM."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]  # [1, L]
    with torch.no_grad():
        logp = torch.log_softmax(llm_model(input_ids=ids).logits[0, -1].double(), dim=-1)  # [V]
    out = []
    for letter in letters:
        full = tokenizer(prompt + answer_text(letter))["input_ids"]
        assert full[:-1] == ids[0].tolist()  # the letter is one token after the prompt
        out.append(float(logp[full[-1]]))
    return np.array(out)


def test_mcq_text_only_picks_the_highest_next_token_logprob(store, llm):
    model, tokenizer = llm
    doc = evaluate_zero_shot(
        store["records"], None, store["findings"], "diagnostic", "mcq", prompt="text-only",
        model_bundle=(TextOnlyLM(model), tokenizer, {"llm": "tiny"}), progress=False,
    )  # fmt: skip
    es = load_eval_set(store["records"], "diagnostic")
    records = pl.read_parquet(store["records"]).to_dicts()
    findings = {r["ecg_id"]: r for r in pl.read_parquet(store["findings"]).to_dicts()}
    letters = task_letters("diagnostic")
    for i, row in enumerate(es.rows):
        rec = records[row]
        f = findings[rec["ecg_id"]]
        prompt = zero_shot_prompt(
            "diagnostic", Patient.from_record(rec), f["general"], {lead: f[f"lead_{lead}"] for lead in LEADS}, ecg=False
        )
        expected = _manual_next_token(model, tokenizer, prompt, letters)
        np.testing.assert_allclose(doc["predictions"]["scores"][i], expected, atol=1e-4)
        assert doc["predictions"]["predicted"][i] == letters[int(np.argmax(expected))]
        probs = np.exp(expected - expected.max()) / np.exp(expected - expected.max()).sum()
        np.testing.assert_allclose(doc["predictions"]["probabilities"][i], probs, atol=1e-4)
    assert doc["n"] == len(es) and doc["class_counts"] == es.counts()
    assert doc["text_has_ecg"] is False and doc["text_has_findings"] is True


def test_mcq_follows_a_head_that_makes_one_letter_win(store, llm_dir):
    """An LM head with zero weights and a bias on " C": every answer is C (a visible collapse)."""
    model, tokenizer = load_llm(llm_dir, dtype="float32", device="cpu")
    c_id = tokenizer(zero_shot_prompt("rhythm", Patient()) + answer_text("C"))["input_ids"][-1]
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[c_id] = 5.0
    model.lm_head = head
    doc = evaluate_zero_shot(
        store["records"], None, store["findings"], "rhythm", "mcq", prompt="text-only",
        model_bundle=(TextOnlyLM(model), tokenizer, {"llm": "tiny"}), progress=False,
    )  # fmt: skip
    assert set(doc["predictions"]["predicted"]) == {"C"}
    assert doc["predicted_options"] == {"A": 0, "B": 0, "C": 8, "D": 0, "E": 0}
    assert doc["accuracy"] == pytest.approx(1 / 8)  # one SBRAD ECG among 8
    p_c = np.exp(5.0) / (np.exp(5.0) + 4)
    np.testing.assert_allclose(np.array(doc["predictions"]["probabilities"])[:, 2], p_c, atol=1e-6)


@pytest.mark.parametrize("score", ["sum", "mean"])
def test_likelihood_text_only_picks_the_phrase_with_the_highest_logprob(store, llm, score):
    model, tokenizer = llm
    doc = evaluate_zero_shot(
        store["records"], None, None, "rhythm", "likelihood", prompt="text-only", likelihood_score=score,
        model_bundle=(TextOnlyLM(model), tokenizer, {"llm": "tiny"}), progress=False,
    )  # fmt: skip
    es = load_eval_set(store["records"], "rhythm")
    records = pl.read_parquet(store["records"]).to_dicts()
    classes = ["SR", "STACH", "SBRAD", "AFIB", "SARRH"]
    reduce = np.sum if score == "sum" else np.mean
    for i, row in enumerate(es.rows[:3]):
        expected = []
        for code in classes:
            pt = likelihood_text(Patient.from_record(records[row]), code, ecg=False)
            (span,) = pt.spans
            enc = tokenizer(pt.text, return_offsets_mapping=True)
            ids = torch.tensor([enc["input_ids"]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)  # [L, V]
            # tokens that start inside the phrase (a leading-space token starts one character before it)
            picked = [t for t, (s, e) in enumerate(enc["offset_mapping"]) if e > span.start and s < span.end and t > 0]
            expected.append(reduce([float(logp[t - 1, enc["input_ids"][t]]) for t in picked]))
        np.testing.assert_allclose(doc["predictions"]["scores"][i], expected, atol=1e-4)
        assert doc["predictions"]["predicted"][i] == "ABCDE"[int(np.argmax(expected))]
    assert doc["text_has_findings"] is False and doc["mode"] == "likelihood"
    assert doc["scoring"] == f"log-probability of the class phrase ({score} over its tokens)"


def test_likelihood_score_sum_and_mean_differ_where_the_phrases_differ_in_length(store, llm):
    model, tokenizer = llm
    docs = {
        score: evaluate_zero_shot(
            store["records"], None, None, "diagnostic", "likelihood", prompt="text-only", likelihood_score=score,
            model_bundle=(TextOnlyLM(model), tokenizer, {"llm": "tiny"}), progress=False,
        )  # fmt: skip
        for score in ("sum", "mean")
    }
    # "normal" and "ST/T change" tokenise to different lengths, so the two scores are not one rescaled
    s, m = (np.asarray(docs[k]["predictions"]["scores"]) for k in ("sum", "mean"))
    assert not np.allclose(s - s.max(axis=1, keepdims=True), m - m.max(axis=1, keepdims=True))
    with pytest.raises(StageError, match="likelihood-score"):
        evaluate_zero_shot(
            store["records"], None, None, "diagnostic", "likelihood", prompt="text-only", likelihood_score="max",
            model_bundle=(TextOnlyLM(model), tokenizer, {"llm": "tiny"}), progress=False,
        )  # fmt: skip


def test_ecg_prompt_scores_match_a_manual_forward_with_the_ecg_spliced_in(store, llm, align_dir):
    model, tokenizer = llm
    ecglm = ECGLM.load(align_dir, model, tokenizer=tokenizer)
    doc = evaluate_zero_shot(
        store["records"], store["signals"], store["findings"], "form", "mcq", prompt="ecg-only",
        model_bundle=(ecglm, tokenizer, {"llm": "tiny"}), progress=False,
    )  # fmt: skip
    es = load_eval_set(store["records"], "form")
    records = pl.read_parquet(store["records"]).to_dicts()
    sig = np.load(store["signals"])
    i, row = 2, int(es.rows[2])
    prompt = zero_shot_prompt("form", Patient.from_record(records[row]), findings=False)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        embeds = ecglm.embed(ids, torch.from_numpy(sig[row : row + 1].astype(np.float32)))
        logp = torch.log_softmax(model(inputs_embeds=embeds).logits[0, -1].double(), dim=-1)
    expected = [float(logp[tokenizer(prompt + answer_text(letter))["input_ids"][-1]]) for letter in "ABCDE"]
    np.testing.assert_allclose(doc["predictions"]["scores"][i], expected, atol=1e-4)


# ------------------------------------------------------------------------------------------ generate


def test_generated_reports_answer_with_the_class_they_name_first():
    texts = [
        " sinus tachycardia, abnormal QRS. The anomalies in general: sinus tachycardia, lead I: normal",
        " Atrial fibrillation with sinus rhythm mentioned later.",
        " abnormal QRS. The anomalies in general: no abnormality, lead I: normal, lead II: sinus bradycardia",
        "",
        " sinus arrhythmia",
    ]
    y_pred, probs = predictions_from_generations(texts, "rhythm")
    assert y_pred.tolist() == [1, 3, -1, -1, 4]  # B, D, none (a lead description does not count), none, E
    np.testing.assert_array_equal(probs.sum(axis=1), [1, 1, 0, 0, 1])
    assert probs[0, 1] == 1.0 and probs[4, 4] == 1.0
    assert generated_report(texts[2]) == " abnormal QRS. The anomalies in general: no abnormality"
    # "abnormal" does not name "normal", the lead descriptions' "normal" is cut off
    assert predictions_from_generations([texts[2], " normal ECG, lead I: normal"], "diagnostic")[0].tolist() == [-1, 0]


def test_an_unanswered_record_is_wrong_and_counted():
    y_true = np.array([0, 1, 2, 3, 4, 0])
    y_pred = np.array([0, 1, -1, 3, -1, 0])
    probs = np.eye(5)[np.clip(y_pred, 0, None)] * (y_pred >= 0)[:, None]
    m = classification_metrics(y_true, y_pred, probs, "rhythm")
    assert m["n_unanswered"] == 2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0 + 1 + 0) / 5)
    assert m["confusion_order"] == ["A", "B", "C", "D", "E", "none"]
    assert np.array(m["confusion_matrix"]).shape == (5, 6) and m["confusion_matrix"][2][5] == 1
    assert sum(m["predicted_options"].values()) == 4
    answered = classification_metrics(y_true, np.array([0, 1, 2, 3, 4, 0]), np.eye(5)[[0, 1, 2, 3, 4, 0]], "rhythm")
    assert answered["n_unanswered"] == 0 and answered["confusion_order"] == list("ABCDE")
    with pytest.raises(ValueError, match="-1"):
        classification_metrics(y_true, np.array([0, 1, 2, 3, 5, 0]), probs, "rhythm")


def test_generate_mode_parses_the_greedy_report_of_each_records_ecg(store, llm, align_dir):
    model, tokenizer = llm
    ecglm = ECGLM.load(align_dir, model, tokenizer=tokenizer)
    doc = evaluate_zero_shot(
        store["records"], store["signals"], None, "rhythm", "generate", prompt="ecg-only", max_new_tokens=5,
        model_bundle=(ecglm, tokenizer, {"llm": "tiny"}), progress=False, batch_size=3,
    )  # fmt: skip
    es = load_eval_set(store["records"], "rhythm")
    records = pl.read_parquet(store["records"]).to_dicts()
    sig = torch.from_numpy(np.load(store["signals"])[es.rows].astype(np.float32))
    prompts = [report_prompt(Patient.from_record(records[int(r)])) for r in es.rows]
    expected = generate_greedy(ecglm, tokenizer, prompts, sig, max_new_tokens=5)
    assert doc["predictions"]["generated"] == expected
    y_pred, _ = predictions_from_generations(expected, "rhythm")
    assert doc["predictions"]["predicted"] == ["ABCDE"[i] if i >= 0 else "none" for i in y_pred]
    assert doc["n_unanswered"] == int((y_pred < 0).sum())
    assert doc["mode"] == "generate" and "greedy" in doc["scoring"] and doc["text_has_findings"] is False
    with pytest.raises(StageError, match="max-new-tokens"):
        evaluate_zero_shot(store["records"], store["signals"], None, "rhythm", "generate", prompt="ecg-only",
                           max_new_tokens=0, model_bundle=(ecglm, tokenizer, {}), progress=False)  # fmt: skip


# ------------------------------------------------------------------------------------ shuffled control


def test_shuffle_permutation_is_a_seeded_derangement():
    for n in (2, 3, 10, 101):
        perm = shuffle_permutation(n, 7)
        assert sorted(perm.tolist()) == list(range(n))
        assert (perm != np.arange(n)).all()
        np.testing.assert_array_equal(perm, shuffle_permutation(n, 7))
    assert not np.array_equal(shuffle_permutation(101, 7), shuffle_permutation(101, 8))
    with pytest.raises(StageError, match="at least 2"):
        shuffle_permutation(1, 0)


def test_shuffled_control_feeds_each_record_another_records_ecg(tmp_path, store, llm_dir, align_dir):
    model, tokenizer = load_llm(llm_dir, dtype="float32", device="cpu")
    with torch.no_grad():  # sharper next-token distributions, so the ECG visibly moves the scores
        model.lm_head.weight.mul_(100.0)
    bundle = (ECGLM.load(align_dir, model, tokenizer=tokenizer), tokenizer, {"llm": "tiny"})
    kw = dict(prompt="ecg-only", model_bundle=bundle, progress=False)

    def run(signals, control, seed=11):
        doc = evaluate_zero_shot(store["records"], signals, None, "diagnostic", "mcq", control=control, seed=seed, **kw)
        return np.array(doc["predictions"]["scores"])

    own = run(store["signals"], "none")
    shuffled = run(store["signals"], "shuffled")
    np.testing.assert_array_equal(shuffled, run(store["signals"], "shuffled"))  # deterministic for a seed
    assert np.abs(shuffled - own).max() > 1e-3  # the ECG token moved the scores
    assert np.abs(run(store["signals"], "shuffled", seed=12) - shuffled).max() > 1e-3
    # the same as evaluating a store whose rows were moved by the seed's permutation
    es = load_eval_set(store["records"], "diagnostic")
    perm = shuffle_permutation(len(es), 11)
    sig = np.load(store["signals"])
    moved = sig.copy()
    moved[es.rows] = sig[es.rows[perm]]
    np.save(tmp_path / "moved.npy", moved)
    np.testing.assert_allclose(run(tmp_path / "moved.npy", "none"), shuffled, atol=1e-9)


# ------------------------------------------------------------------------------------------ baselines


def test_majority_baseline_uses_the_training_majority(tmp_path, store):
    # training singles: MI x3, NORM x1 (the CD+MI ECG is left out); the test majority is NORM
    assert training_class_counts(store["records"], "diagnostic") == {"NORM": 1, "MI": 3, "STTC": 0, "CD": 0, "HYP": 0}
    assert majority_class(store["records"], "diagnostic") == 1
    doc = evaluate_baseline("majority", store["records"], "diagnostic", out=tmp_path / "majority" / "diagnostic-majority.json")
    saved = json.loads((tmp_path / "majority" / "diagnostic-majority.json").read_text())
    assert saved == doc
    assert doc["predicted_options"] == {"A": 0, "B": 8, "C": 0, "D": 0, "E": 0}
    assert doc["accuracy"] == pytest.approx(2 / 8) and doc["model"]["majority_class"] == "MI"
    assert doc["macro_auc"] == pytest.approx(0.5)
    assert doc["predictions"]["probabilities"][0] == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_supervised_baseline_is_the_argmax_of_the_task_logits(tmp_path, store):
    from ecglm.train.train_encoder import EncoderConfig, load_encoder, train_encoder

    classes = ["SR", "STACH", "SBRAD", "AFIB", "SARRH"]
    cfg = EncoderConfig(epochs=1, batch_size=4, base_width=4, device="cpu", label_column="rhythm", classes=["AFIB", *classes[:3], "SARRH"])
    train_encoder(cfg, store["records"], store["signals"], tmp_path / "enc", progress=False, threads=1)
    doc = evaluate_baseline("supervised", store["records"], "rhythm", signals=store["signals"], encoder=tmp_path / "enc", device="cpu", progress=False)
    enc, _ = load_encoder(tmp_path / "enc")
    es = load_eval_set(store["records"], "rhythm")
    with torch.no_grad():
        logits = enc(torch.from_numpy(np.load(store["signals"])[es.rows].astype(np.float32)))  # [M, 5]
    order = [cfg.classes.index(c) for c in classes]  # the encoder's columns in option order
    expected = logits[:, order].double().numpy()
    np.testing.assert_allclose(doc["predictions"]["scores"], expected, atol=1e-5)
    assert doc["predictions"]["predicted"] == ["ABCDE"[j] for j in expected.argmax(axis=1)]
    with pytest.raises(StageError, match="trained on 'rhythm'"):
        evaluate_baseline("supervised", store["records"], "form", signals=store["signals"], encoder=tmp_path / "enc", device="cpu")


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_writes_the_json_atomically(tmp_path, store, llm_dir, align_dir):
    out = tmp_path / "eval" / "full" / "diagnostic-mcq.json"
    argv = ["evaluate", "--records", str(store["records"]), "--signals", str(store["signals"]),
            "--findings", str(store["findings"]), "--task", "diagnostic", "--mode", "mcq", "--align", str(align_dir),
            "--llm", str(llm_dir), "--device", "cpu", "--batch-size", "3", "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    doc = json.loads(out.read_text())
    assert sorted(p.name for p in out.parent.iterdir()) == ["diagnostic-mcq.json"]  # no temporary left
    assert doc["task"] == "diagnostic" and doc["mode"] == "mcq" and doc["prompt"] == "full" and doc["control"] == "none"
    assert doc["model"]["llm"]["name_or_path"] == str(llm_dir) and doc["model"]["align"]["projector"] == "linear"
    assert sum(doc["predicted_options"].values()) == doc["n"] == 8
    assert np.array(doc["confusion_matrix"]).sum() == 8
    for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "macro_auc"):
        assert 0.0 <= doc[key] <= 1.0
    # text-only: the LLM alone, taken from the aligned model's config when --llm is omitted
    out2 = tmp_path / "eval" / "text-only" / "rhythm-likelihood.json"
    argv2 = ["evaluate", "--records", str(store["records"]), "--task", "rhythm", "--mode", "likelihood",
             "--prompt", "text-only", "--align", str(align_dir), "--device", "cpu", "--out", str(out2), "--no-progress"]  # fmt: skip
    assert cli.main(argv2) == 0
    assert json.loads(out2.read_text())["model"]["align"] is None


def test_cli_runs_several_modes_with_one_model_and_matches_single_runs(tmp_path, store, llm_dir, align_dir):
    common = ["evaluate", "--records", str(store["records"]), "--signals", str(store["signals"]),
              "--findings", str(store["findings"]), "--task", "rhythm", "--align", str(align_dir), "--llm", str(llm_dir),
              "--device", "cpu", "--batch-size", "3", "--no-progress"]  # fmt: skip
    together = tmp_path / "together" / "rhythm-{mode}.json"
    assert cli.main(common + ["--mode", "mcq", "likelihood", "generate", "--max-new-tokens", "4",
                              "--out", str(together)]) == 0  # fmt: skip
    for mode in ("mcq", "likelihood", "generate"):
        alone = tmp_path / "alone" / f"rhythm-{mode}.json"
        assert cli.main(common + ["--mode", mode, "--max-new-tokens", "4", "--out", str(alone)]) == 0
        a, b = json.loads(alone.read_text()), json.loads((tmp_path / "together" / f"rhythm-{mode}.json").read_text())
        assert a["mode"] == b["mode"] == mode and a["predictions"] == b["predictions"] and a["f1"] == b["f1"]


@pytest.mark.parametrize("modes, out, message", [
    (["mcq", "likelihood"], None, "{mode}"),
    (["mcq", "likelihood"], "x.json", "{mode}"),
    (["mcq", "mcq"], "x-{mode}.json", "twice"),
])  # fmt: skip
def test_several_modes_need_a_mode_placeholder(tmp_path, modes, out, message):
    from ecglm.eval.evaluate import mode_outputs

    with pytest.raises(StageError, match=re.escape(message)):
        mode_outputs(modes, None if out is None else tmp_path / out)
    assert mode_outputs(["mcq"], tmp_path / "a.json") == [tmp_path / "a.json"]


def test_cli_errors_are_one_line(tmp_path, store, capsys):
    argv = ["evaluate", "--records", str(store["records"]), "--signals", str(store["signals"]), "--task", "form",
            "--mode", "mcq", "--prompt", "ecg-only", "--out", str(tmp_path / "x.json")]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ecglm evaluate: error:") and "--align" in err[-1]
    assert not (tmp_path / "x.json").exists()
    argv = ["evaluate-baseline", "--records", str(store["records"]), "--task", "form", "--kind", "supervised"]
    assert cli.main(argv) == 1
    assert "--encoder" in capsys.readouterr().err
