"""ECG-QA fine-tuning (`ecglm finetune-qa`), its scoring (`ecglm evaluate-qa`) and table (`ecglm qa-table`).

Real inputs throughout: the demo world's ECG-QA look-alike through `ecglm prepare` and `ecglm qa-data`, a
tiny Llama built from a config (tests/tiny_llm.py) with a real fast tokenizer, an ECG-LM saved by
`ECGLM.save`, peft's LoRA adapters.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from tiny_llm import build_tiny_llm

from ecglm import cli
from ecglm.core.errors import StageError
from ecglm.eval.qa import (
    constrained_answer,
    evaluate_qa,
    exact_match,
    majority_answers,
    parse_reply,
    score_summary,
)
from ecglm.models.encoder import ResNet1d18
from ecglm.models.llm import load_llm
from ecglm.models.multimodal import ECGLM
from ecglm.models.tokenize_pairs import IGNORE_INDEX
from ecglm.text.prompts import ECG_TOKEN, qa_answer_text, qa_prompt
from ecglm.train.finetune import FinetuneConfig, finetune, qa_datasets
from ecglm.train.qa_data import QADataset, answer_order


@pytest.fixture(scope="module")
def store(demo_world, tmp_path_factory):
    """The demo world prepared at 100 Hz, and its ECG-QA questions."""
    from ecglm.data.prepare import prepare
    from ecglm.data.qa import prepare_qa

    root = tmp_path_factory.mktemp("qa-store")
    prepare(demo_world / "ptb-xl" / "1.0.3", root / "prepared", fs=100, workers=2, progress=False)
    prepare_qa(demo_world / "ecg-qa", root / "prepared" / "records.parquet", root / "qa")
    return {"qa": root / "qa", "signals": root / "prepared" / "signals_100.npy"}


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny")


@pytest.fixture(scope="module")
def aligned(llm_dir, tmp_path_factory):
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    torch.manual_seed(0)
    model = ECGLM(ResNet1d18(n_classes=5, base_width=4), llm, tokenizer.convert_tokens_to_ids(ECG_TOKEN))
    return model.save(tmp_path_factory.mktemp("aligned") / "full")


def small_config(llm_dir, aligned, **kw) -> FinetuneConfig:
    values = dict(llm=str(llm_dir), aligned_dir=str(aligned), dtype="float32", batch_size=4, max_steps=6,
                  checkpoint_every=2, max_val_samples=8, lora_rank=2, lora_alpha=4.0, seed=5, device="cpu")  # fmt: skip
    values.update(kw)
    return FinetuneConfig(**values)


# ------------------------------------------------------------------------------------------- scoring rules


def test_exact_match_is_on_the_answer_set():
    assert exact_match(["a", "b"], ["b", "a"])
    assert not exact_match(["a"], ["a", "b"])
    assert not exact_match(["a", "b", "c"], ["a", "b"])
    assert exact_match(["a", "a"], ["a"])
    assert not exact_match(None, ["a"])  # an unparsed reply is wrong


def test_a_reply_parses_into_valid_answers_or_not_at_all():
    valid = ["lead I", "lead II", "lead V1", "none"]
    assert parse_reply(" lead II; LEAD i ", valid) == ["lead I", "lead II"]
    assert parse_reply("lead V1", valid) == ["lead V1"]
    assert parse_reply("lead V7", valid) is None  # not an answer of the template
    assert parse_reply("lead I;", valid) is None  # an empty part
    assert parse_reply("", valid) is None


def test_the_constrained_reading_takes_the_best_answer_or_the_answers_near_it():
    valid = ["no", "not sure", "yes"]
    assert constrained_answer(np.log([0.2, 0.1, 0.7]), valid, "single-verify") == ["yes"]
    leads = ["lead I", "lead II", "lead V1"]
    assert constrained_answer(np.log([0.45, 0.5, 0.05]), leads, "single-query") == ["lead I", "lead II"]
    assert constrained_answer(np.log([0.2, 0.75, 0.05]), leads, "single-query") == ["lead II"]


def test_majority_answers_per_template_with_the_type_as_fallback():
    train = pl.DataFrame({"template_id": [1, 1, 1, 2], "question_type": ["single-verify"] * 3 + ["single-query"],
                          "answer": [["yes"], ["no"], ["no"], ["lead I", "lead II"]]})  # fmt: skip
    by_template, by_type = majority_answers(train)
    assert by_template == {1: ["no"], 2: ["lead I", "lead II"]} and by_type["single-verify"] == ["no"]


def test_score_summary_averages_the_three_types_unweighted():
    types = ["single-verify"] * 4 + ["single-choose"] * 2 + ["single-query"] * 2
    correct = [1, 1, 1, 1, 0, 0, 1, 0]
    summary = score_summary(correct, types, ["scp_code"] * 8, [f"p{i}" for i in range(8)], seed=0)
    assert summary["by_type"]["single-verify"]["value"] == 1.0 and summary["by_type"]["single-choose"]["value"] == 0.0
    assert summary["avg"]["value"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    low, high = summary["avg"]["interval"]
    assert low <= summary["avg"]["value"] <= high


# ------------------------------------------------------------------------------------------- the samples


def test_the_loss_is_on_the_answer_and_its_end_only(store, llm_dir):
    _, tokenizer = load_llm(llm_dir, dtype="float32")
    data = QADataset(store["qa"] / "train.parquet", store["signals"], tokenizer, 256, seed=3)
    item = data[0]
    text, [(start, end)] = data.text(0)
    prompt = qa_prompt(data.questions[0])
    assert text[:start] == prompt and text[start:end] == qa_answer_text(answer_order(data.answers[0], data.sample_ids[0], 3))
    labelled = (item["labels"] != IGNORE_INDEX).nonzero().flatten()
    answer_ids = tokenizer(text[start:end], add_special_tokens=False)["input_ids"]
    assert item["labels"][-1] == tokenizer.eos_token_id  # the model learns to stop
    assert len(labelled) >= 2 and labelled[-1] == len(item["input_ids"]) - 1
    assert int(labelled[0]) == len(item["input_ids"]) - 1 - len(answer_ids)  # nothing of the question is a target
    assert item["signal"].shape == (12, 1000) and bool(item["lead_mask"].all())
    blind = QADataset(store["qa"] / "train.parquet", store["signals"], tokenizer, 256, ecg=False, seed=3)
    assert "signal" not in blind[0] and ECG_TOKEN not in blind.text(0)[0]


def test_answer_order_is_a_seeded_permutation():
    answers = ["lead I", "lead II", "lead V1", "lead V2"]
    orders = {tuple(answer_order(answers, s, 0)) for s in range(20)}
    assert len(orders) > 1 and all(sorted(o) == sorted(answers) for o in orders)
    assert answer_order(answers, 4, 0) == answer_order(answers, 4, 0)


# ------------------------------------------------------------------------------------------- fine-tuning


def test_finetune_trains_adapters_encoder_and_projector_and_leaves_the_base_llm(store, llm_dir, aligned, tmp_path):
    cfg = small_config(llm_dir, aligned)
    data = qa_datasets(store["qa"] / "train.parquet", store["qa"] / "valid.parquet", store["signals"])
    metrics = finetune(cfg, data, tmp_path / "out", tmp_path / "resume", progress=False, threads=1)
    assert metrics["steps"] == 6 and metrics["adapter_parameters"] > 0 and np.isfinite(metrics["final_val_loss"])
    out = tmp_path / "out"
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (tmp_path / "resume").exists()
    saved = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("llm.") for k in saved)  # never an LLM weight beside the encoder
    before = load_file(str(aligned / "model.safetensors"))
    assert not torch.equal(saved["projector.proj.weight"], before["projector.proj.weight"])
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert sum(t.numel() for t in adapter.values()) == metrics["adapter_parameters"]
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    reloaded = ECGLM.load(out, llm, tokenizer=tokenizer)
    assert reloaded.adapter["rank"] == 2
    base = load_file(str(llm_dir / "model.safetensors"))
    inner = reloaded.llm.get_base_model().state_dict()
    assert all(torch.equal(inner[k], v) for k, v in base.items() if k in inner)


@pytest.mark.parametrize("answer_tokens", [False, True], ids=["lora", "lora+answer-tokens"])
def test_a_killed_finetune_resumes_to_the_same_weights(store, llm_dir, aligned, tmp_path, answer_tokens):
    data = qa_datasets(store["qa"] / "train.parquet", store["qa"] / "valid.parquet", store["signals"])
    cfg = small_config(llm_dir, aligned, train_answer_tokens=answer_tokens)
    finetune(cfg, data, tmp_path / "whole", tmp_path / "r1", progress=False, threads=1)

    class Killed(Exception):
        pass

    def kill(step):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        finetune(cfg, data, tmp_path / "killed", tmp_path / "r2", progress=False, threads=1, on_step=kill)
    assert (tmp_path / "r2" / "latest").is_file()
    with pytest.raises(StageError, match="another configuration"):
        finetune(small_config(llm_dir, aligned, lora_rank=4, train_answer_tokens=answer_tokens), data,
                 tmp_path / "killed", tmp_path / "r2",
                 progress=False, threads=1)  # fmt: skip
    metrics = finetune(cfg, data, tmp_path / "killed", tmp_path / "r2", progress=False, threads=1)
    assert metrics["resumed"]
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = load_file(str(tmp_path / "whole" / name)), load_file(str(tmp_path / "killed" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name



def test_the_answer_tokens_are_every_token_an_answer_is_written_in(store, llm_dir):
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    data = QADataset(store["qa"] / "train.parquet", store["signals"], tokenizer, 128)
    ids = data.answer_token_ids()
    valid = pl.read_parquet(store["qa"] / "train.parquet")["valid_answers"].to_list()
    for answers in ([["yes"], ["no"], ["not sure"]] + [[a] for v in valid[:50] for a in v] + [["yes", "no"]]):
        assert set(tokenizer(qa_answer_text(answers), add_special_tokens=False)["input_ids"]) <= set(ids), answers
    assert tokenizer.eos_token_id in ids and ids == sorted(set(ids))
    question = tokenizer(qa_prompt("Does this ECG show sinus rhythm?"), add_special_tokens=False)["input_ids"]
    assert not set(question) <= set(ids)  # the question's own words are not answer tokens


@pytest.fixture(scope="module")
def tied_llm_dir(tmp_path_factory):
    return build_tiny_llm(tmp_path_factory.mktemp("llm-tied") / "tiny", tied=True)


@pytest.fixture(scope="module")
def tied_finetuned(store, tied_llm_dir, tmp_path_factory):
    """(output folder, metrics) of a short fine-tuning of the tied LLM with trained answer-token rows."""
    root = tmp_path_factory.mktemp("tied-finetuned")
    llm, tokenizer = load_llm(tied_llm_dir, dtype="float32")
    torch.manual_seed(0)
    aligned = ECGLM(ResNet1d18(n_classes=5, base_width=4), llm, tokenizer.convert_tokens_to_ids(ECG_TOKEN))
    aligned_dir = aligned.save(root / "aligned")
    data = qa_datasets(store["qa"] / "train.parquet", store["qa"] / "valid.parquet", store["signals"])
    cfg = small_config(tied_llm_dir, aligned_dir, train_answer_tokens=True, lr=0.05, max_steps=4)
    return root / "out", finetune(cfg, data, root / "out", progress=False, threads=1)


def test_trainable_answer_tokens_move_the_tied_output_rows_and_are_saved_apart(store, tied_llm_dir, tied_finetuned):
    """The demo LLM ties its output head to its embeddings and has never predicted " yes": only a trained row
    lifts it. The rows train as a delta in the adapter; the base LLM's tensors stay bit-identical."""
    out, metrics = tied_finetuned
    _, tokenizer = load_llm(tied_llm_dir, dtype="float32")
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    deltas = [k for k in adapter if "trainable_tokens" in k]
    assert deltas and sum(t.numel() for t in adapter.values()) == metrics["adapter_parameters"]
    ids = QADataset(store["qa"] / "train.parquet", store["signals"], tokenizer, 128).answer_token_ids()
    assert sum(adapter[k].shape[0] for k in deltas if "embed_tokens" in k) == len(ids)
    reloaded = ECGLM.load(out, load_llm(tied_llm_dir, dtype="float32")[0], tokenizer=tokenizer)
    assert reloaded.adapter["trainable_tokens"] == len(ids)
    base = load_file(str(tied_llm_dir / "model.safetensors"))
    inner = reloaded.llm.get_base_model().state_dict()
    assert all(torch.equal(inner[k], v) for k, v in base.items() if k in inner)
    # the output rows of the answer tokens moved with their input rows (tied), no other row moved
    head = reloaded.llm.get_output_embeddings()
    hidden = torch.randn(3, base["model.embed_tokens.weight"].shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tuned = head(hidden)  # [3, V]
        reloaded.llm.disable_adapter_layers()
        plain = head(hidden)
        reloaded.llm.enable_adapter_layers()
    assert torch.allclose(plain, hidden @ base["model.embed_tokens.weight"].T, atol=1e-5)
    others = sorted(set(range(plain.shape[1])) - set(ids))
    assert torch.equal(tuned[:, others], plain[:, others])
    assert not torch.allclose(tuned[:, ids], plain[:, ids], atol=1e-3)


def test_merged_adapters_give_the_same_model_and_are_not_saved(store, tied_llm_dir, tied_finetuned, tmp_path):
    """evaluate-qa merges the adapters (LoRA and the tied answer-token rows) into the LLM for speed: the
    logits must be those of the unmerged model, and a merged model must refuse to be saved."""
    from ecglm.eval.qa import load_finetuned, read_signals

    out, _ = tied_finetuned
    llm, tokenizer = load_llm(tied_llm_dir, dtype="float32")
    plain = ECGLM.load(out, llm, tokenizer=tokenizer).eval()
    merged, _, ecg = load_finetuned(out, str(tied_llm_dir), "cpu")
    assert ecg and merged.merged and not plain.merged
    assert not any(p.requires_grad for p in merged.llm.parameters())
    test = pl.read_parquet(store["qa"] / "test.parquet").head(6)
    batch = tokenizer([qa_prompt(q) + qa_answer_text(a) for q, a in zip(test["question"].to_list(), test["answer"].to_list())],
                      return_tensors="pt", padding=True)  # fmt: skip
    signals = torch.as_tensor(read_signals(store["signals"], test["row"].to_numpy()))
    with torch.no_grad():
        want = plain(batch["input_ids"], batch["attention_mask"], signals).logits  # [B, L, V]
        got = merged(batch["input_ids"], batch["attention_mask"], signals).logits
        plain.llm.disable_adapter_layers()
        base = plain(batch["input_ids"], batch["attention_mask"], signals).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(base, want, atol=1e-3)  # the adapters change the model: the merge is no no-op
    with pytest.raises(StageError, match="merged"):
        merged.save(tmp_path / "again")
    assert not (tmp_path / "again" / "model.safetensors").exists()


def test_answer_tokens_need_a_closed_answer_vocabulary(llm_dir, aligned):
    from ecglm.train.finetune import trainable_token_ids

    cfg = small_config(llm_dir, aligned, train_answer_tokens=True)
    with pytest.raises(StageError, match="closed answer vocabulary"):
        trainable_token_ids(cfg, object(), "finetune-chat")


def test_the_blind_model_trains_on_the_questions_alone(store, llm_dir, aligned, tmp_path):
    data = qa_datasets(store["qa"] / "train.parquet", store["qa"] / "valid.parquet", store["signals"])
    metrics = finetune(small_config(llm_dir, aligned, ecg=False, max_steps=2), data, tmp_path / "blind",
                       progress=False, threads=1)  # fmt: skip
    assert metrics["ecg"] is False
    saved, before = load_file(str(tmp_path / "blind" / "model.safetensors")), load_file(str(aligned / "model.safetensors"))
    assert all(torch.equal(saved[k], before[k]) for k in before)  # encoder and projector untouched


def test_finetune_refuses_unknown_lora_targets(store, llm_dir, aligned, tmp_path):
    data = qa_datasets(store["qa"] / "train.parquet", store["qa"] / "valid.parquet", store["signals"])
    with pytest.raises(StageError, match=r"lora targets \['query'\] name no linear layer"):
        finetune(small_config(llm_dir, aligned, lora_targets=["query"]), data, tmp_path / "o", progress=False)


# ------------------------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def finetuned(store, llm_dir, aligned, tmp_path_factory):
    root = tmp_path_factory.mktemp("finetuned")
    for name, ecg in (("ecg", True), ("blind", False)):
        assert cli.main(["finetune-qa", "--qa", str(store["qa"]), "--signals", str(store["signals"]),
                         "--aligned", str(aligned), "--llm", str(llm_dir), "--out", str(root / name),
                         "--set", "max_steps=3", "--set", "batch_size=4", "--set", "lora_rank=2",
                         "--set", f"ecg={str(ecg).lower()}", "--set", "device=cpu", "--threads", "1",
                         "--no-progress"]) == 0  # fmt: skip
    return root


@pytest.mark.parametrize("kind", ["ecg", "blind"])
def test_the_cached_answer_scores_are_the_full_sequences_log_probabilities(store, llm_dir, finetuned, kind):
    """The constrained reading runs each prompt once and continues its candidates from the KV cache: each score
    must be the log-probability of the answer (and EOS where the whole reply is scored) in one full pass."""
    from ecglm.eval.qa import answer_scores, load_finetuned, read_signals
    from ecglm.models.tokenize_pairs import encode_sample

    model, tokenizer, ecg = load_finetuned(finetuned / kind, str(llm_dir), "cpu")
    test = pl.read_parquet(store["qa"] / "test.parquet")
    test = pl.concat([test.filter(pl.col("question_type") == t).head(4) for t in sorted(set(test["question_type"]))])
    prompts = [qa_prompt(q, ecg=ecg) for q in test["question"].to_list()]
    valid = test["valid_answers"].to_list()
    whole = [t != "single-query" for t in test["question_type"].to_list()]
    signals = read_signals(store["signals"], test["row"].to_numpy()) if ecg else None
    got = answer_scores(model, tokenizer, prompts, valid, signals, whole, batch_size=3, max_length=128)
    assert [len(g) for g in got] == [len(v) for v in valid] and sum(len(v) for v in valid) > 12
    for i, (prompt, answers) in enumerate(zip(prompts, valid)):
        want = []
        for a in answers:
            text = prompt + qa_answer_text([a])
            enc = encode_sample(tokenizer, text, [(len(prompt), len(text))], 128, add_eos=whole[i],
                                num_ecg_tokens=model.num_ecg_tokens)  # fmt: skip
            sig = None if signals is None else torch.as_tensor(signals[i : i + 1])
            with torch.no_grad():
                logits = model(enc["input_ids"][None], enc["attention_mask"][None], sig).logits[0]  # [L, V]
            logp = torch.log_softmax(logits[:-1].float(), dim=-1)
            target = enc["labels"][1:]
            keep = target != IGNORE_INDEX
            want.append(float(logp[keep].gather(-1, target[keep][:, None]).sum()))
        assert np.allclose(got[i], want, atol=1e-4), (prompt, got[i], want)


def test_evaluate_qa_scores_both_readings_with_intervals(store, llm_dir, finetuned):
    doc = evaluate_qa(store["qa"], model_dir=finetuned / "ecg", llm=str(llm_dir), signals=store["signals"],
                      max_questions=30, seed=1, batch_size=16, max_new_tokens=6, device="cpu", threads=1)  # fmt: skip
    assert doc["ecg"] is True and doc["n_questions"] <= 31
    assert set(doc["questions"]["question_type"]) == {"single-verify", "single-choose", "single-query"}
    for reading in ("generate", "constrained"):
        result = doc["readings"][reading]
        for t, entry in result["summary"]["by_type"].items():
            assert 0.0 <= entry["value"] <= 1.0 and entry["n"] > 0
        assert len(result["correct"]) == doc["n_questions"]
    assert doc["readings"]["constrained"]["unparsed_rate"] == 0.0  # the constrained reading always answers
    assert all(p is None or isinstance(p, list) for p in doc["readings"]["generate"]["predicted"])
    # the correctness is the exact match of what was predicted
    for reading in ("generate", "constrained"):
        result = doc["readings"][reading]
        test = pl.read_parquet(store["qa"] / "test.parquet")
        answer = dict(zip(test["sample_id"].to_list(), test["answer"].to_list()))
        assert result["correct"] == [exact_match(p, answer[s]) for p, s in zip(result["predicted"],
                                                                               doc["questions"]["sample_id"])]  # fmt: skip


def test_the_shuffled_control_and_the_blind_model_and_the_table(store, llm_dir, finetuned, tmp_path):
    common = dict(llm=str(llm_dir), signals=store["signals"], max_questions=30, seed=1, batch_size=16, max_new_tokens=6,
                  device="cpu", threads=1)  # fmt: skip
    paths = {}
    for name, kw in (("ecg", {"model_dir": finetuned / "ecg"}), ("blind", {"model_dir": finetuned / "blind"}),
                     ("shuffled", {"model_dir": finetuned / "ecg", "control": "shuffled"})):  # fmt: skip
        doc = evaluate_qa(store["qa"], **common, **kw)
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(doc))
    assert json.loads(paths["blind"].read_text())["ecg"] is False
    with pytest.raises(StageError, match="blind model"):
        evaluate_qa(store["qa"], **{**common, "model_dir": finetuned / "blind", "control": "shuffled"})
    out = tmp_path / "majority.json"
    assert cli.main(["evaluate-qa", "--qa", str(store["qa"]), "--baseline", "majority", "--max-questions", "30",
                     "--seed", "1", "--out", str(out)]) == 0  # fmt: skip
    paths["majority"] = out
    table = tmp_path / "tables" / "qa.md"
    args = ["qa-table", "--out", str(table), "--config-json", json.dumps({"seed": 9, "qa": {"source": "demo"}})]
    for name, path in paths.items():
        args += ["--results", f"{name}={path}"]
    assert cli.main(args) == 0
    text = table.read_text()
    for needle in ("S-Verify", "blind (questions only)", "ECG-LM, shuffled ECGs", "majority answer",
                   "ECG-LM (paper, published", "0.758", "ECG-LM minus blind", "## Protocol"):  # fmt: skip
        assert needle in text, needle
    rows = pl.read_csv(table.with_suffix(".csv"))
    assert {"single-verify", "single-verify_low", "avg_high", "unparsed"} <= set(rows.columns)
    assert rows.filter(pl.col("model") == "majority answer").height == 1


def test_the_paired_difference_of_a_model_with_itself_is_zero(store, llm_dir, finetuned):
    from ecglm.eval.qa_table import paired_differences

    doc = evaluate_qa(store["qa"], baseline="majority", max_questions=30, seed=1)
    diff = paired_differences(doc, doc, seed=0)["majority"]
    assert all(entry["value"] == 0.0 and entry["interval"] == [0.0, 0.0] for entry in diff.values())
    other = evaluate_qa(store["qa"], baseline="majority", max_questions=20, seed=1)
    with pytest.raises(StageError, match="the same questions"):
        paired_differences(doc, other, seed=0)
