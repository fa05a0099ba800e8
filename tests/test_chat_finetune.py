"""`ecglm finetune-chat`: scrubbed conversations and ECG dialogues, rendered with a chat template or the plain
layout, the loss on the assistant turns only, one batch mixing texts with and without an ECG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_expand import _inputs
from tiny_llm import build_tiny_llm

from ecglm import cli
from ecglm.models.encoder import ResNet1d18
from ecglm.models.llm import load_llm
from ecglm.models.multimodal import ECGLM
from ecglm.models.tokenize_pairs import IGNORE_INDEX, collate
from ecglm.text.prompts import CHAT_ECG_REQUEST, CHAT_SYSTEM, ECG_TOKEN
from ecglm.train.chat_data import ChatDataset, Dialogue, conversation_dialogues, ecg_dialogues, render

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}")


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-store")
    records = _inputs(root, n=40)
    signals = np.random.default_rng(0).integers(-500, 500, size=(records.height, 12, 1000)).astype(np.int16)
    np.save(root / "signals_100.npy", signals)
    return root


def dialogue(ecg_row=None):
    return Dialogue("Be kind.", (("Hello, my chest hurts.", "Please see a doctor today."),
                                 ("Is it serious?", "It can be; an ECG will tell.")), ecg_row, "conversation")  # fmt: skip


@pytest.mark.parametrize("template", [None, CHATML])
def test_the_assistant_turns_and_their_end_are_the_only_targets(llm_dir, template):
    _, tokenizer = load_llm(llm_dir, dtype="float32")
    tokenizer.chat_template = template
    text, spans = render(tokenizer, dialogue())
    assert [text[s:e] for s, e in spans] == ["Please see a doctor today.</s>", "It can be; an ECG will tell.</s>"]
    if template:
        assert text.startswith("<|im_start|>system\nBe kind.</s>")
    else:
        assert text.startswith("Be kind.\n\nUser: Hello, my chest hurts.\nAssistant: Please")
    from ecglm.models.tokenize_pairs import encode_sample

    item = encode_sample(tokenizer, text, spans, 512)
    labelled = tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX])
    assert "Please see a doctor today." in labelled and "chest" not in labelled and "Be kind" not in labelled
    assert int((item["labels"] == tokenizer.eos_token_id).sum()) == 2  # each assistant turn learns to stop


def test_conversations_are_scrubbed_before_training(chatdoctor_sample, tmp_path):
    path = tmp_path / "conv.json"
    path.write_text(json.dumps([{"instruction": "If you are a doctor, please answer.",
                                 "input": "Hi, I am John Miller, call me at 555-867-5309. My ECG shows a long QT.",
                                 "output": "Hello John Miller. A long QT needs care. Thanks for using Chat Doctor."}]))  # fmt: skip
    dialogues, counts = conversation_dialogues([path])
    (user, assistant), = dialogues[0].turns
    assert "John" not in user + assistant and "555" not in user and "[NAME]" in user and "[PHONE]" in user
    assert "Chat Doctor" not in assistant and "long QT" in assistant
    assert counts["NAME"] >= 2 and counts["PHONE"] == 1
    real, _ = conversation_dialogues(sorted(chatdoctor_sample.glob("*.json")))
    assert len(real) == 300 and all(d.ecg_row is None and d.system for d in real)


def test_ecg_dialogues_hand_over_the_ecg_and_hide_the_findings_in_part(store):
    dialogues = ecg_dialogues(store / "records.parquet", store / "reports_en.parquet", store / "findings.parquet",
                              seed=3, findings_share=0.5)  # fmt: skip
    assert dialogues and all(d.source == "ecg" and d.ecg_row is not None for d in dialogues)
    assert all(d.turns[0][0] == CHAT_ECG_REQUEST and d.turns[0][1].startswith("The ECG report indicates sinus rhythm")
               for d in dialogues)  # fmt: skip
    shown = [d for d in dialogues if "The measured findings of the ECG" in d.system]
    assert 0 < len(shown) < len(dialogues) and all(d.system.startswith(CHAT_SYSTEM) for d in dialogues)
    none = ecg_dialogues(store / "records.parquet", store / "reports_en.parquet", store / "findings.parquet",
                         findings_share=0.0)  # fmt: skip
    assert not any("measured findings" in d.system for d in none)


def test_a_batch_mixes_texts_with_and_without_an_ecg(store, llm_dir):
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    data = ChatDataset([dialogue(None), Dialogue(None, ((CHAT_ECG_REQUEST, "A normal ECG."),), 3, "ecg")],
                       store / "signals_100.npy", tokenizer, 256)  # fmt: skip
    batch = collate([data[0], data[1]], tokenizer.pad_token_id)
    assert batch["lead_mask"].tolist()[0] == [False] * 12 and all(batch["lead_mask"][1])
    torch.manual_seed(0)
    model = ECGLM(ResNet1d18(n_classes=5, base_width=4), llm, tokenizer.convert_tokens_to_ids(ECG_TOKEN))
    model.eval()
    out = model(batch["input_ids"], batch["attention_mask"], batch["signal"], batch["lead_mask"], batch["labels"])
    assert torch.isfinite(out.loss)
    alone = model(batch["input_ids"][1:], batch["attention_mask"][1:], batch["signal"][1:], batch["lead_mask"][1:])
    width = int(batch["attention_mask"][1].sum())
    assert torch.allclose(out.logits[1, :width], alone.logits[0, :width], atol=1e-5)  # the ECG row is unchanged
    bad = batch["lead_mask"].clone()
    bad[1] = False  # the ECG row's mask says "no ECG" but its text holds <ecg>
    with pytest.raises(ValueError, match="expected 0"):
        model(batch["input_ids"], batch["attention_mask"], batch["signal"], bad)


def test_finetune_chat_end_to_end(store, llm_dir, chatdoctor_sample, tmp_path):
    llm, tokenizer = load_llm(llm_dir, dtype="float32")
    torch.manual_seed(0)
    aligned = ECGLM(ResNet1d18(n_classes=5, base_width=4), llm, tokenizer.convert_tokens_to_ids(ECG_TOKEN)).save(
        tmp_path / "aligned")
    out = tmp_path / "chat"
    assert cli.main(["finetune-chat", "--records", str(store / "records.parquet"), "--reports",
                     str(store / "reports_en.parquet"), "--findings", str(store / "findings.parquet"), "--signals",
                     str(store / "signals_100.npy"), "--conversations", *map(str, sorted(chatdoctor_sample.glob("*.json"))),
                     "--aligned", str(aligned), "--llm", str(llm_dir), "--out", str(out), "--set", "max_steps=3",
                     "--set", "batch_size=4", "--set", "lora_rank=2", "--set", "max_length=256", "--set", "device=cpu",
                     "--threads", "1", "--no-progress"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["n_conversations"] == 300 and metrics["n_ecg_dialogues"] > 0
    assert metrics["n_train_samples"] == 300 + metrics["n_ecg_dialogues"] and metrics["final_val_loss"] is not None
    assert "scrubbed" in metrics and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not any(k.startswith("llm.") for k in load_file(str(out / "model.safetensors")))
