"""Tests of `ecglm build-demo-llm` (ecglm/demo_llm.py): corpus, tokenizer, tiny pretraining, CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ecglm.cli import main as cli_main
from ecglm.core.errors import StageError
from ecglm.core.leads import LEADS
from ecglm.text.prompts import (
    ANSWER_STEM,
    CLASS_PHRASES,
    ECG_SENTENCE,
    ECG_TOKEN,
    TASKS,
    Patient,
    answer_text,
    training_text,
)
from ecglm.train.demo_llm import (
    LETTERS,
    SPECIAL_TOKENS,
    DemoLLMConfig,
    balanced_items,
    build_corpus,
    build_demo_llm,
    corpus_stats,
    ecg_documents,
    fill_slot,
    key_slot,
    key_training_task,
    key_word,
    letter_token_ids,
    load_training_inputs,
    lookup_answers,
    mcq_prompt,
    phrase_key,
    slot_findings,
    task_class,
    train_tokenizer,
)

# rhythm class -> the general finding a describe run would write for it
RHYTHM_WORDS = {"SR": "sinus rhythm", "STACH": "sinus tachycardia", "SBRAD": "sinus bradycardia",
                "AFIB": "atrial fibrillation", "SARRH": "sinus arrhythmia"}
DIAG_LEAD = {"NORM": None, "MI": ("V2", "pathological Q wave"), "STTC": ("V5", "ST depression"),
             "CD": ("V1", "wide QRS"), "HYP": ("V6", "tall R wave")}
RECORD_SCHEMA = {
    "ecg_id": pl.Int32, "age": pl.Int16, "age_over_89": pl.Boolean, "sex": pl.String, "height": pl.Float32,
    "weight": pl.Float32, "split": pl.String, "diagnostic_superclass": pl.List(pl.String),
    "rhythm": pl.List(pl.String), "form": pl.List(pl.String),
}
FINDINGS_SCHEMA = {"ecg_id": pl.Int32, "general": pl.String, **{f"lead_{lead}": pl.String for lead in LEADS},
                   "findings": pl.List(pl.String)}

TINY = dict(vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, batch_size=16,
            max_steps=40, epochs=5.0, learning_rate=5e-3, warmup_steps=5, threads=1, eval_max_per_class=4)


def make_world(folder: Path, n: int = 60, seed: int = 0, rhythm_weights=(0.6, 0.1, 0.1, 0.1, 0.1)) -> dict[str, Path]:
    """records / reports_en / findings Parquet files of ``n`` hand-made ECGs (splits 70/15/15 %).

    Every fifth ECG holds two rhythm classes (so it gets no rhythm question); the general findings name
    the rhythm, the report names the superclass."""
    rng = np.random.default_rng(seed)
    rhythms = list(RHYTHM_WORDS)
    recs, reps, fins = [], [], []
    for i in range(n):
        ecg_id = 10 + 3 * i  # ids with gaps
        split = "train" if i < int(0.7 * n) else ("val" if i < int(0.85 * n) else "test")
        rhythm = [rhythms[int(rng.choice(5, p=rhythm_weights))]]
        if i % 5 == 4:
            rhythm = ["SR", "SARRH"]
        diag = ["NORM", "MI", "STTC", "CD", "HYP"][i % 5]
        form = ["NDT"] if i % 3 == 0 else []
        recs.append({
            "ecg_id": ecg_id, "age": None if i % 7 == 0 else 20 + i % 60, "age_over_89": i % 7 == 0 and i % 2 == 0,
            "sex": [None, "male", "female"][i % 3], "height": None if i % 2 else 170.0 + i % 10,
            "weight": None if i % 3 else 70.5, "split": split, "diagnostic_superclass": [diag], "rhythm": rhythm,
            "form": form,
        })
        reps.append({"ecg_id": ecg_id, "report_en": f"{RHYTHM_WORDS[rhythm[0]]}, {diag.lower()} pattern {split}"})
        leads = {f"lead_{lead}": None for lead in LEADS}
        if DIAG_LEAD[diag]:
            lead, words = DIAG_LEAD[diag]
            leads[f"lead_{lead}"] = words
        general = ", ".join(RHYTHM_WORDS[r] for r in rhythm)
        fins.append({"ecg_id": ecg_id, "general": f"{general}, marker{split}{ecg_id}", **leads,
                     "findings": [r.lower() for r in rhythm]})
    paths = {"records": folder / "records.parquet", "reports": folder / "reports_en.parquet",
             "findings": folder / "findings.parquet"}
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(recs, schema=RECORD_SCHEMA).write_parquet(paths["records"])
    pl.DataFrame(reps, schema={"ecg_id": pl.Int32, "report_en": pl.String}).write_parquet(paths["reports"])
    pl.DataFrame(fins, schema=FINDINGS_SCHEMA).write_parquet(paths["findings"])
    return paths


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def joined(world) -> pl.DataFrame:
    return load_training_inputs(world["records"], world["reports"], world["findings"])


@pytest.fixture(scope="module")
def corpus(joined):
    return build_corpus(joined.filter(pl.col("split") == "train"), DemoLLMConfig(seed=7))


# ---------------------------------------------------------------------------------------------- corpus


def test_slot_findings_and_fill_slot():
    leads = {"V2": "ST elevation ", "I": None, "V3": ""}
    assert slot_findings("sinus tachycardia.", leads) == "sinus tachycardia, lead V2: ST elevation"
    assert slot_findings(None, {}) == "no abnormality"
    text = f"This person is a 5-year-old male. {ECG_SENTENCE} The ECG report indicates x."
    assert fill_slot(text, "sinus rhythm") == ("This person is a 5-year-old male. The ECG signal is sinus rhythm. "
                                               "The ECG report indicates x.")
    with pytest.raises(ValueError):
        fill_slot("no slot here", "sinus rhythm")


def test_corpus_holds_training_ecgs_only(joined, corpus):
    train_ids = set(joined.filter(pl.col("split") == "train")["ecg_id"].to_list())
    other_ids = set(joined.filter(pl.col("split") != "train")["ecg_id"].to_list())
    assert other_ids and {d.ecg_id for d in corpus} == train_ids
    text = "\n".join(d.text for d in corpus)
    assert "markerval" not in text and "markertest" not in text and "markertrain" in text
    assert " val" not in text.replace("interval", "") and " test" not in text  # no val/test report either
    with pytest.raises(StageError, match="training ECGs only"):
        build_corpus(joined, DemoLLMConfig())


def test_corpus_writes_findings_in_the_slot(joined, corpus):
    train = joined.filter(pl.col("split") == "train")
    by_kind = Counter(d.kind for d in corpus)
    assert by_kind["slot_training"] == train.height and "training" not in by_kind  # no literal <ecg> slot
    questions = sum(c for k, c in by_kind.items() if k.startswith("mcq_"))
    assert by_kind["likelihood"] + by_kind["likelihood_key"] == questions  # one per question item
    for row in train.iter_rows(named=True):
        leads = {lead: row[f"lead_{lead}"] for lead in LEADS}
        slot = f"The ECG signal is {slot_findings(row['general'], leads)}."
        docs = [d for d in corpus if d.ecg_id == row["ecg_id"]]
        slot_doc = next(d for d in docs if d.kind == "slot_training")
        plain = training_text(Patient.from_record(row), row["report"], row["general"], leads).text
        assert slot in slot_doc.text and ECG_TOKEN not in slot_doc.text
        assert ECG_SENTENCE in plain and slot_doc.text == plain.replace(ECG_SENTENCE, slot)
        assert slot_doc.text.index(slot) < slot_doc.text.index("The ECG report indicates")
        # the same template with one key word alone in the slot (a task of the default key_training_tasks)
        task = key_training_task(row, ["rhythm", "diagnostic"], 7)
        key_docs = [d for d in docs if d.kind == "key_training"]
        if task is None:
            assert not key_docs
        else:
            code = task_class(row[{"diagnostic": "diagnostic_superclass"}.get(task, task)], task)
            assert [d.text for d in key_docs] == [plain.replace(ECG_SENTENCE, f"The ECG signal is {key_word(task, code)}.")]
            assert key_docs[0].task == task
        for d in docs:
            if d.kind in ("mcq_slot", "mcq_slot_findings", "likelihood"):
                assert slot in d.text and ECG_TOKEN not in d.text
            if d.kind == "mcq_text":
                assert "The ECG signal is" not in d.text and "Abnormalities detected in general" in d.text
            if d.kind == "mcq_key":  # the slot holds only the key word of the answer's class
                code = next(c for x, c, _ in TASKS[d.task] if x == d.answer)
                assert f"The ECG signal is {key_word(d.task, code)}.\n" in d.text and "Abnormalities" not in d.text
            if d.kind == "likelihood_key":  # the key word alone in the slot, then the report names the class
                code = next(c for x, c, _ in TASKS[d.task] if x == d.answer)
                assert d.text.endswith(f"The ECG signal is {key_word(d.task, code)}. The ECG report indicates "
                                       f"{CLASS_PHRASES[code]}.")


def test_key_training_task_is_drawn_among_the_tasks_the_ecg_has_one_class_of(joined):
    row = next(r for r in joined.iter_rows(named=True)
               if task_class(r["rhythm"], "rhythm") and task_class(r["diagnostic_superclass"], "diagnostic"))
    drawn = {key_training_task({**row, "ecg_id": i}, ["rhythm", "diagnostic"], seed=1) for i in range(40)}
    assert drawn == {"rhythm", "diagnostic"}  # both drawn over ECGs, deterministic per ECG
    assert key_training_task(row, ["rhythm", "diagnostic"], 1) == key_training_task(row, ["rhythm", "diagnostic"], 1)
    assert key_training_task({**row, "form": []}, ["form"], 1) is None
    assert ecg_documents(row)[-1].kind == "slot_training" and len(ecg_documents(row)) == 1
    with pytest.raises(StageError, match="key_training_tasks"):
        DemoLLMConfig(key_training_tasks=["rhythm", "nope"])


def test_key_slot_all_puts_every_task_word_in_the_slot(joined):
    train = joined.filter(pl.col("split") == "train")
    config = DemoLLMConfig(key_slot="all")
    corpus = build_corpus(train, config)
    rows = {r["ecg_id"]: r for r in train.iter_rows(named=True)}
    codes = {i: (task_class(r["rhythm"], "rhythm"), task_class(r["diagnostic_superclass"], "diagnostic"))
             for i, r in rows.items()}
    both = [i for i, (r, d) in codes.items() if r and d]
    only_diagnostic = [i for i, (r, d) in codes.items() if d and not r]
    assert both and only_diagnostic
    key_docs = {d.ecg_id: d for d in corpus if d.kind == "key_training"}
    for i in both:  # the rhythm word, then the diagnostic word: one per ECG token
        rhythm, diagnostic = codes[i]
        words = f"{key_word('rhythm', rhythm)} {key_word('diagnostic', diagnostic)}"
        assert f"The ECG signal is {words}. The ECG report" in key_docs[i].text
        assert key_docs[i].task == "rhythm+diagnostic"
    for i in only_diagnostic:
        assert f"The ECG signal is {key_word('diagnostic', codes[i][1])}. " in key_docs[i].text
    # a key question and its likelihood sentence hold the same words; a form question its own word only
    for d in corpus:
        if d.kind not in ("mcq_key", "likelihood_key"):
            continue
        code = next(c for x, c, _ in TASKS[d.task] if x == d.answer)
        rhythm, diagnostic = codes[d.ecg_id]
        if d.task == "form":
            slot = key_word("form", code)
        else:
            slot = " ".join(key_word(t, c) for t, c in (("rhythm", rhythm), ("diagnostic", diagnostic)) if c)
        assert f"The ECG signal is {slot}." in d.text
    wrong = next(c for _, c, _ in TASKS["rhythm"] if c != codes[both[0]][0])  # not the ECG's class:
    assert key_slot(rows[both[0]], "rhythm", wrong, ["rhythm", "diagnostic"]) == key_word("rhythm", wrong)  # alone
    # "one" (the default) keeps one drawn word per ECG
    one = {d.ecg_id: d for d in build_corpus(train, DemoLLMConfig()) if d.kind == "key_training"}
    assert all(len(one[i].text) < len(key_docs[i].text) for i in both)
    with pytest.raises(StageError, match="key_slot"):
        DemoLLMConfig(key_slot="both")


def test_questions_carry_the_right_answer(joined, corpus):
    rows = {r["ecg_id"]: r for r in joined.iter_rows(named=True)}
    questions = [d for d in corpus if d.kind.startswith("mcq_")]
    assert questions
    seen_tasks = set()
    for d in questions:
        row = rows[d.ecg_id]
        code = task_class(row[{"diagnostic": "diagnostic_superclass"}.get(d.task, d.task)], d.task)
        assert code is not None, "a question for an ECG without exactly one class of the task"
        letter = next(x for x, c, _ in TASKS[d.task] if c == code)
        assert d.answer == letter and d.text.endswith(f"{ANSWER_STEM}{answer_text(letter)}")
        assert d.text == mcq_prompt(row, d.task, d.kind[4:], code) + f" {letter}"
        seen_tasks.add(d.task)
    assert seen_tasks == {"diagnostic", "rhythm", "form"}
    # ECGs with two rhythm classes (every fifth) never get a rhythm question
    two = {i for i, r in rows.items() if len(r["rhythm"]) == 2}
    assert two and not any(d.ecg_id in two and d.task == "rhythm" for d in questions)
    # a hand-made record: sinus tachycardia -> B, myocardial infarction -> B
    stach = next(i for i, r in rows.items() if r["rhythm"] == ["STACH"] and r["split"] == "train")
    assert {d.answer for d in questions if d.ecg_id == stach and d.task == "rhythm"} == {"B"}
    # the likelihood sentences (one per question item) name the record's class
    stach_ids = {i for i, r in rows.items() if r["rhythm"] == ["STACH"] and r["split"] == "train"}
    likelihood = [d for d in corpus if d.kind == "likelihood" and d.ecg_id in stach_ids and d.task == "rhythm"]
    assert likelihood and all(d.text.endswith("The ECG report indicates sinus tachycardia.") for d in likelihood)


def test_answer_letters_are_balanced(joined, corpus):
    stats = corpus_stats(corpus)
    for task in TASKS:
        counts = [c for c in stats["letters"][task].values() if c]
        assert counts and len(set(counts)) == 1, f"{task}: unbalanced letters {stats['letters'][task]}"
    rhythm = stats["letters"]["rhythm"]
    assert all(rhythm[x] > 0 for x in LETTERS)  # every rhythm class of the training split is asked
    train = joined.filter(pl.col("split") == "train")
    sr = sum(task_class(r, "rhythm") == "SR" for r in train["rhythm"].to_list())
    assert rhythm["A"] < sr  # the majority class (SR) was subsampled ...
    assert stats["majority_letter_share"] < 0.5  # ... and no letter dominates


def test_balanced_items_resamples_per_class():
    classes = ["SR"] * 20 + ["AFIB"] * 2 + [None] * 5 + ["STACH"] * 5
    items = balanced_items(classes, 0, np.random.default_rng(0))
    counts = Counter(code for _, code in items)
    assert counts == {"SR": 9, "AFIB": 9, "STACH": 9}  # ceil(27 / 3)
    assert {i for i, c in items if c == "AFIB"} == {20, 21}  # every row of a small class appears
    assert len({i for i, c in items if c == "SR"}) == 9  # a large class: a subset without repeats
    assert all(classes[i] == c for i, c in items)
    assert Counter(c for _, c in balanced_items(classes, 4, np.random.default_rng(0))) == {"SR": 4, "AFIB": 4,
                                                                                          "STACH": 4}


def test_lookup_reference_reads_class_phrases_with_the_balanced_prior():
    def row(rhythm, general):
        return {"rhythm": [rhythm], "general": general, **{f"lead_{lead}": None for lead in LEADS}}

    assert phrase_key(row("SR", "sinus rhythm, sinus arrhythmia, left axis deviation"), "rhythm") == ("SR", "SARRH")
    assert phrase_key(row("SR", "Sinus Tachycardia"), "rhythm") == ("STACH",)
    assert phrase_key(row("NORM", "no abnormality"), "diagnostic") == ()  # "abnormality" is not "normal"
    both = "sinus rhythm, sinus arrhythmia"
    # SR: 20 rows, 4 of them also name sinus arrhythmia (20 %); SARRH: 5 rows, 3 name both (60 %)
    train = ([row("SR", "sinus rhythm")] * 16 + [row("SR", both)] * 4 + [row("SARRH", both)] * 3
             + [row("SARRH", "sinus rhythm")] * 2 + [row("AFIB", "atrial fibrillation")] * 2)
    probe = [row("SR", both), row("SR", "sinus rhythm"), row("AFIB", "atrial fibrillation"), row("SR", "odd")]
    # both -> SARRH (0.6 > 0.2 of its class), plain -> SR (0.8 > 0.4); a key unseen in training ("odd" names
    # no class) -> A, as no training row had an empty key ...
    assert lookup_answers(train, probe, "rhythm") == ["E", "A", "D", "A"]
    # ... and the empty key's answer once one has
    assert lookup_answers(train + [row("AFIB", "odd")], probe, "rhythm")[-1] == "D"


def test_corpus_is_deterministic_for_a_seed(joined):
    train = joined.filter(pl.col("split") == "train")
    a = build_corpus(train, DemoLLMConfig(seed=3))
    assert a == build_corpus(train, DemoLLMConfig(seed=3))
    assert a != build_corpus(train, DemoLLMConfig(seed=4))


# ---------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_special_tokens_letters_and_round_trip(corpus):
    tok = train_tokenizer([d.text for d in corpus], 400)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ecg_id = tok.convert_tokens_to_ids(ECG_TOKEN)
    enc = tok(f"The ECG signal is {ECG_TOKEN}. The ECG report", add_special_tokens=False)["input_ids"]
    assert enc.count(ecg_id) == 1
    letters = letter_token_ids(tok)
    assert len(set(letters)) == 5
    for letter, i in zip(LETTERS, letters):
        assert tok(f" {letter}", add_special_tokens=False)["input_ids"] == [i]
    question = next(d for d in corpus if d.kind == "mcq_slot")
    prompt = question.text[: -len(answer_text(question.answer))]
    ids = tok(prompt)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] != tok.eos_token_id
    # the answer is exactly one more token after the prompt
    assert tok(question.text)["input_ids"] == ids + [letters[LETTERS.index(question.answer)]]
    for text in [question.text, f"This person is über 89. {ECG_SENTENCE} ST/T  change\n", corpus[0].text]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


# ---------------------------------------------------------------------------------------------- config


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("hidden_size: 64\nnum_heads: 2\nmcq_variants: [slot, text]\n")
    cfg = DemoLLMConfig.load(path, ["epochs=1", "check_strict=true", "learning_rate=1e-3"])
    assert (cfg.hidden_size, cfg.num_heads, cfg.mcq_variants, cfg.epochs, cfg.check_strict, cfg.learning_rate) == \
        (64, 2, ["slot", "text"], 1.0, True, 1e-3)
    assert DemoLLMConfig.from_dict(cfg.to_dict()) == cfg
    path.write_text("hidden_sise: 64\n")
    with pytest.raises(StageError, match="unknown key.*hidden_sise"):
        DemoLLMConfig.load(path)
    with pytest.raises(StageError, match="unknown key.*hidden_sise"):
        DemoLLMConfig.load(None, ["hidden_sise=64"])
    with pytest.raises(StageError, match="hidden_size = 'big': input should be a valid integer"):
        DemoLLMConfig.load(None, ["hidden_size=big"])
    with pytest.raises(StageError, match="check_strict = 1: value error, expected true or false"):
        DemoLLMConfig.load(None, ["check_strict=1"])
    with pytest.raises(StageError, match="multiple of num_heads"):
        DemoLLMConfig.load(None, ["hidden_size=30", "num_heads=4"])
    with pytest.raises(StageError, match="mcq_variants"):
        DemoLLMConfig.load(None, ["mcq_variants=[slot, ecg]"])
    with pytest.raises(StageError, match="check_task"):
        DemoLLMConfig.load(None, ["check_task=rhythms"])
    with pytest.raises(StageError, match="KEY=VALUE"):
        DemoLLMConfig.load(None, ["epochs"])


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    """Two tiny builds with the same seed (and the metrics of the first)."""
    root = tmp_path_factory.mktemp("llm")
    config = DemoLLMConfig(**TINY)
    a = build_demo_llm(world["records"], world["reports"], world["findings"], root / "a", config, progress=False)
    build_demo_llm(world["records"], world["reports"], world["findings"], root / "b", config, progress=False)
    return root, a


def test_training_lowers_the_loss_and_logs_each_step(built):
    root, metrics = built
    log = pl.read_csv(root / "a" / "train_log.csv")
    assert log.height == metrics["training"]["steps"] == TINY["max_steps"]
    assert log["step"].to_list() == list(range(1, TINY["max_steps"] + 1))
    first, last = log["loss"].head(5).mean(), log["loss"].tail(5).mean()
    assert last < first - 0.5, f"loss did not fall: {first:.3f} -> {last:.3f}"
    saved = json.loads((root / "a" / "metrics.json").read_text())
    assert saved["training"]["final_loss"] == pytest.approx(metrics["training"]["final_loss"])
    check = saved["check"]
    assert check["task"] == "rhythm" and check["variant"] == "slot" and check["n"] > 0
    assert 0.0 <= check["balanced_accuracy"] <= 1.0 and check["passed"] == (check["balanced_accuracy"] >= 0.9)
    # the hand-made findings name each ECG's rhythm, so a lookup of the phrases reads every one right
    assert check["lookup_balanced_accuracy"] == 1.0
    assert set(saved["evaluation"]) == set(TASKS)
    assert sum(saved["corpus"]["letters_overall"].values()) > 0
    assert (root / "a" / "skipped.csv").read_text().strip() == "ecg_id,reason"
    assert DemoLLMConfig.load(root / "a" / "demo_llm_config.yaml") == DemoLLMConfig(**TINY)


def test_saved_model_reloads_with_auto_classes_and_generates(built):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = built[0] / "a"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tok) <= TINY["vocab_size"]
    assert tok.convert_tokens_to_ids(ECG_TOKEN) == 4 and len(letter_token_ids(tok)) == 5
    text = f"This person is a 63-year-old male. {ECG_SENTENCE} The ECG report indicates"
    enc = tok(text, return_tensors="pt")
    assert enc["input_ids"][0, 0] == tok.bos_token_id and tok.decode(enc["input_ids"][0, 1:]) == text
    with torch.no_grad():
        logits = model(**enc).logits  # [1, T, V]
        assert logits.shape == (1, enc["input_ids"].shape[1], len(tok)) and torch.isfinite(logits).all()
        generated = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert generated.shape[1] > enc["input_ids"].shape[1]
    assert generated[0, : enc["input_ids"].shape[1]].tolist() == enc["input_ids"][0].tolist()


def test_same_seed_gives_identical_weights(built):
    from safetensors.numpy import load_file

    a, b = load_file(built[0] / "a" / "model.safetensors"), load_file(built[0] / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (built[0] / "a" / "tokenizer.json").read_bytes() == (built[0] / "b" / "tokenizer.json").read_bytes()


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_builds_and_a_strict_failed_check_leaves_nothing(world, tmp_path, capsys):
    args = ["build-demo-llm", "--records", str(world["records"]), "--reports", str(world["reports"]),
            "--findings", str(world["findings"]), "--no-progress"]
    tiny = [f"--set={k}={v}" for k, v in TINY.items() if k != "max_steps"] + ["--set", "max_steps=3"]
    out = tmp_path / "llm"
    strict = ["--set", "check_strict=true", "--set", "check_min_balanced_accuracy=1.0"]
    assert cli_main([*args, "--out", str(out), *tiny, *strict]) == 1
    assert "below the threshold" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".llm*"))  # no half-written output, no temp folder
    assert cli_main([*args, "--out", str(out), *tiny]) == 0
    assert "balanced accuracy" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["training"]["steps"] == 3


def test_cli_names_missing_inputs(world, tmp_path, capsys):
    reports = tmp_path / "reports_en.parquet"
    pl.read_parquet(world["reports"]).head(5).write_parquet(reports)
    args = ["build-demo-llm", "--records", str(world["records"]), "--reports", str(reports),
            "--findings", str(world["findings"]), "--out", str(tmp_path / "llm"), "--no-progress"]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "have no text" in err and "no row in reports_en.parquet" in err and "--skip-missing" in err
    bad = tmp_path / "records.parquet"
    pl.read_parquet(world["records"]).drop("rhythm").write_parquet(bad)
    assert cli_main([*args[:2], str(bad), *args[3:]]) == 1
    assert "missing column(s) rhythm" in capsys.readouterr().err


def test_key_word_is_the_word_that_tells_a_class_from_the_others_of_its_task():
    assert [key_word("rhythm", c) for c in ("SR", "STACH", "SBRAD", "AFIB", "SARRH")] == [
        "rhythm", "tachycardia", "bradycardia", "fibrillation", "arrhythmia"]
    assert key_word("diagnostic", "MI") == "infarction" and key_word("diagnostic", "NORM") == "normal"
    assert key_word("form", "NDT") == "abnormalities" and key_word("form", "DIG") == "digitalis"
    for task in TASKS:  # five distinct words per task
        assert len({key_word(task, c).lower() for _, c, _ in TASKS[task]}) == 5
    with pytest.raises(ValueError, match="not a class"):
        key_word("rhythm", "MI")
