"""The ECG-LM model: load_llm, label masking, the <ecg> splice, the frozen LLM, projectors, save/load, scoring.

Everything runs on CPU in float32 against a tiny random Llama built locally (tests/tiny_llm.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_llm import HIDDEN, build_tiny_llm
from torch import nn

from ecglm.core.errors import StageError
from ecglm.core.leads import N_LEADS
from ecglm.models.llm import load_llm
from ecglm.models.multimodal import (
    ECGLM,
    VocabProjector,
    continuation_logprob,
    generate_greedy,
    next_token_ids,
    score_next_token,
    sequence_logprob,
    vocab_exclusions,
)
from ecglm.models.tokenize_pairs import IGNORE_INDEX, EcgTokenTruncated, StraddlingToken, collate, encode_sample
from ecglm.text.prompts import ECG_TOKEN, Patient, TargetSpan, training_text

T = 100  # samples per lead of the test signals


class TinyEncoder(nn.Module):
    """``forward_features(x [B, 12, T], lead_mask [B, 12]) -> [B, 16]``: conv, batch norm, mean pool."""

    def __init__(self, feature_dim: int = 16) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.conv = nn.Conv1d(N_LEADS, feature_dim, kernel_size=5, padding=2)
        self.norm = nn.BatchNorm1d(feature_dim)

    def forward_features(self, x: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        x = x * lead_mask.unsqueeze(-1).to(x.dtype)  # [B, 12, T], dropped leads zeroed
        return torch.relu(self.norm(self.conv(x))).mean(dim=-1)  # [B, D]


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny")


@pytest.fixture()
def llm(llm_dir):
    return load_llm(llm_dir, dtype="float32", device="cpu")


def make_model(llm, projector: str = "linear", k: int = 1, seed: int = 0, hard: bool = False) -> ECGLM:
    model, tokenizer = llm
    torch.manual_seed(seed)
    return ECGLM(
        TinyEncoder(),
        model,
        tokenizer.convert_tokens_to_ids(ECG_TOKEN),
        projector=projector,
        num_ecg_tokens=k,
        temperature=0.5,
        vocab_excluded_ids=vocab_exclusions(tokenizer, model),
        vocab_hard=hard,
    )


def signals(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, N_LEADS, T, generator=g)  # [n, 12, T] mV


def batch_of(tokenizer, texts, k: int = 1, max_length: int = 256):
    samples = [encode_sample(tokenizer, text, spans, max_length, num_ecg_tokens=k) for text, spans in texts]
    return collate(samples, tokenizer.pad_token_id)


SAMPLE = training_text(
    Patient(age=63, sex="male", height_cm=172.0, weight_kg=80.0),
    "sinus rhythm, left ventricular hypertrophy",
    "prolonged qt",
    {"I": "st elevation", "V1": "q wave"},
    lead_mask=[True, True, False, False, True, True, True, False, False, False, False, True],
)
_SHORT_TEXT = "The ECG signal is <ecg>. The ECG report indicates atrial fibrillation."
SHORT = (_SHORT_TEXT, [(_SHORT_TEXT.index("atrial"), _SHORT_TEXT.index("."  , 30))])


# ------------------------------------------------------------------------------------------ load_llm
def test_load_llm_loads_the_tiny_local_model_frozen(llm):
    model, tokenizer = llm
    assert tokenizer.is_fast and tokenizer.pad_token_id is not None
    ecg_id = tokenizer.convert_tokens_to_ids(ECG_TOKEN)
    assert tokenizer(f"is {ECG_TOKEN}.", add_special_tokens=False)["input_ids"].count(ecg_id) == 1
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.shape[1] == HIDDEN


def test_load_llm_adds_the_ecg_token_and_resizes_only_when_needed(tmp_path):
    folder = build_tiny_llm(tmp_path / "no_ecg", with_ecg_token=False)
    rows_before = json.loads((folder / "config.json").read_text())["vocab_size"]
    model, tokenizer = load_llm(folder, dtype="float32")
    ecg_id = tokenizer.convert_tokens_to_ids(ECG_TOKEN)
    assert ecg_id == rows_before  # a new id, one past the old vocabulary
    assert model.get_input_embeddings().weight.shape[0] == rows_before + 1
    assert model.get_output_embeddings().weight.shape[0] == rows_before + 1

    padded = build_tiny_llm(tmp_path / "padded", with_ecg_token=False, extra_rows=8)
    rows_padded = json.loads((padded / "config.json").read_text())["vocab_size"]
    model, tokenizer = load_llm(padded, dtype="float32")
    assert tokenizer.convert_tokens_to_ids(ECG_TOKEN) < rows_padded
    assert model.get_input_embeddings().weight.shape[0] == rows_padded  # spare rows: no resize


def test_load_llm_refuses_remote_code_by_default(tmp_path, llm_dir):
    folder = tmp_path / "custom"
    folder.mkdir()
    marker = tmp_path / "remote_code_ran"
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):  # a complete folder but for its code
        (folder / name).write_bytes((llm_dir / name).read_bytes())
    (folder / "configuration_custom.py").write_text(code)
    (folder / "modeling_custom.py").write_text(code)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "ecglm_custom",
                "auto_map": {
                    "AutoConfig": "configuration_custom.CustomConfig",
                    "AutoModelForCausalLM": "modeling_custom.CustomModel",
                },
            }
        )
    )
    with pytest.raises(StageError, match="remote code refused.*custom code"):
        load_llm(folder, dtype="float32")
    assert not marker.exists()  # the checkpoint's code never ran


def test_load_llm_passes_trust_remote_code_false_and_safetensors(llm_dir, monkeypatch):
    import transformers

    calls = {}
    for auto in ("AutoTokenizer", "AutoModelForCausalLM"):
        cls = getattr(transformers, auto)
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _name=auto, _original=original, **kwargs):
            calls[_name] = kwargs
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    load_llm(llm_dir, dtype="float32")
    assert calls["AutoTokenizer"]["trust_remote_code"] is False
    assert calls["AutoModelForCausalLM"]["trust_remote_code"] is False
    assert calls["AutoModelForCausalLM"]["use_safetensors"] is True
    load_llm(llm_dir, dtype="float32", trust_remote_code=True)
    assert calls["AutoModelForCausalLM"]["trust_remote_code"] is True


def test_load_llm_refuses_pickle_weights(tmp_path, llm_dir):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        (folder / name).write_bytes((llm_dir / name).read_bytes())
    model = AutoModelForCausalLM.from_pretrained(llm_dir)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(StageError, match="safetensors"):
        load_llm(folder, dtype="float32")


# ------------------------------------------------------------------------------------ label masking
def labelled_runs(sample) -> list[list[int]]:
    """Runs of consecutive labelled positions."""
    runs: list[list[int]] = []
    for i, label in enumerate(sample["labels"].tolist()):
        if label == IGNORE_INDEX:
            continue
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def test_labels_cover_exactly_the_target_spans(llm):
    _, tokenizer = llm
    text = "The ECG signal is <ecg>. The ECG report indicates atrial fibrillation. Lead V6: st elevation ."
    spans = [(text.index("atrial"), text.index(". Lead")), (text.index("st elev"), text.index(" .") )]
    sample = encode_sample(tokenizer, text, spans, 256)
    ids, labels = sample["input_ids"], sample["labels"]
    assert torch.equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])
    runs = labelled_runs(sample)
    assert [tokenizer.decode(ids[run]).strip() for run in runs] == ["atrial fibrillation", "st elevation"]
    ecg_id = tokenizer.convert_tokens_to_ids(ECG_TOKEN)
    assert labels[ids == ecg_id].tolist() == [IGNORE_INDEX]
    assert ids[0] == tokenizer.bos_token_id and labels[0] == IGNORE_INDEX
    assert sample["attention_mask"].tolist() == [1] * len(ids)


def test_training_text_labels_are_the_report_and_the_lead_descriptions(llm):
    _, tokenizer = llm
    sample = encode_sample(tokenizer, SAMPLE.text, SAMPLE.spans, 512)
    ids = sample["input_ids"]
    runs = labelled_runs(sample)
    assert len(runs) == len(SAMPLE.spans) == 1 + 6  # the report and the 6 kept leads
    for run, span in zip(runs, SAMPLE.spans):
        decoded = tokenizer.decode(ids[run]).strip()
        wanted = SAMPLE.text[span.start : span.end]
        # the overlap rule: a BPE token that merges the end of a target with its comma is a target
        assert decoded in (wanted, wanted + ",", wanted + "."), (decoded, wanted)
    # nothing outside the spans: every labelled token overlaps a span, the template words are context
    context = tokenizer.decode(ids[sample["labels"] == IGNORE_INDEX], skip_special_tokens=False)
    assert "prolonged qt" in context and "63-year-old" in context  # general findings, patient: context
    for word in ("sinus", "hypertrophy", "elevation", "wave", "normal"):
        assert word not in context


def test_a_token_crossing_a_span_start_is_refused_in_strict_mode(llm):
    _, tokenizer = llm
    text = "lead I: normal, lead II: normal."
    start = text.index("ormal,")  # mid-word: the token "▁normal," starts before the span
    loose = encode_sample(tokenizer, text, [(start, start + 5)], 64)
    assert (loose["labels"] != IGNORE_INDEX).sum() == 1
    with pytest.raises(StraddlingToken, match="start of a target span"):
        encode_sample(tokenizer, text, [(start, start + 5)], 64, strict=True)


def test_ecg_expansion_eos_and_truncation(llm):
    _, tokenizer = llm
    text, spans = SHORT
    ecg_id = tokenizer.convert_tokens_to_ids(ECG_TOKEN)
    one = encode_sample(tokenizer, text, spans, 64)
    two = encode_sample(tokenizer, text, spans, 64, num_ecg_tokens=2)
    assert len(two["input_ids"]) == len(one["input_ids"]) + 1
    pos = (two["input_ids"] == ecg_id).nonzero().flatten().tolist()
    assert len(pos) == 2 and pos[1] == pos[0] + 1 and two["labels"][pos].tolist() == [IGNORE_INDEX] * 2

    eos = encode_sample(tokenizer, text, spans, 64, add_eos=True)
    assert eos["input_ids"][-1] == tokenizer.eos_token_id == eos["labels"][-1]
    assert torch.equal(eos["input_ids"][:-1], one["input_ids"])

    ecg_pos = int((one["input_ids"] == ecg_id).nonzero())
    cut = encode_sample(tokenizer, text, spans, ecg_pos + 1)
    assert len(cut["input_ids"]) == ecg_pos + 1 and (cut["labels"] == IGNORE_INDEX).all()
    with pytest.raises(EcgTokenTruncated, match="raise max_length"):
        encode_sample(tokenizer, text, spans, ecg_pos)
    with pytest.raises(ValueError, match="not within the text"):
        encode_sample(tokenizer, text, [(0, len(text) + 1)], 64)


def test_collate_right_pads_with_masked_labels(llm):
    _, tokenizer = llm
    batch = batch_of(tokenizer, [SHORT, (SAMPLE.text, SAMPLE.spans)])
    short_len = len(encode_sample(tokenizer, *SHORT, 256)["input_ids"])
    assert batch["input_ids"].shape[0] == 2
    assert (batch["input_ids"][0, short_len:] == tokenizer.pad_token_id).all()
    assert (batch["attention_mask"][0, short_len:] == 0).all() and (batch["attention_mask"][0, :short_len] == 1).all()
    assert (batch["labels"][0, short_len:] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][1] == 1).all()


# ------------------------------------------------------------------------------------------ splice
@pytest.mark.parametrize("k", [1, 2])
def test_splice_puts_the_projection_exactly_at_the_ecg_positions(llm, k):
    model = make_model(llm, k=k).eval()
    _, tokenizer = llm
    batch = batch_of(tokenizer, [SHORT, (SAMPLE.text, SAMPLE.spans)], k=k)
    sig = signals(2)
    ids = batch["input_ids"]
    embeds = model.embed(ids, sig)  # [2, L, H]
    projected = model.project(sig)  # [2, K, H]
    token_embeds = model.llm.get_input_embeddings()(ids)
    is_ecg = ids == model.ecg_token_id
    for b in range(2):
        pos = is_ecg[b].nonzero().flatten()
        assert len(pos) == k
        assert torch.equal(embeds[b, pos], projected[b])
    assert torch.equal(embeds[~is_ecg], token_embeds[~is_ecg])
    assert not torch.allclose(projected[0], projected[1])


def test_splice_raises_on_a_count_mismatch(llm):
    model = make_model(llm, k=1)
    _, tokenizer = llm
    no_ecg = ("The ECG report indicates atrial fibrillation.", [])
    two_ecg = ("The ECG signal is <ecg>. Again <ecg>.", [])
    with pytest.raises(ValueError, match="hold 1 <ecg> tokens, expected 2"):
        model.embed(batch_of(tokenizer, [SHORT, no_ecg])["input_ids"], signals(2))
    with pytest.raises(ValueError, match="hold 3 <ecg> tokens, expected 2"):
        model.embed(batch_of(tokenizer, [SHORT, two_ecg])["input_ids"], signals(2))
    with pytest.raises(ValueError, match=r"rows \[0, 1\] hold \[2, 0\]"):  # the total is right, the rows are not
        model.embed(batch_of(tokenizer, [two_ecg, no_ecg])["input_ids"], signals(2))
    with pytest.raises(ValueError, match="no ECG signals"):
        model.embed(batch_of(tokenizer, [SHORT])["input_ids"], None)
    model_k2 = make_model(llm, k=2)
    with pytest.raises(ValueError, match="hold 1 <ecg> tokens, expected 2"):
        model_k2.embed(batch_of(tokenizer, [SHORT], k=1)["input_ids"], signals(1))


# -------------------------------------------------------------------------- frozen LLM, projectors
def test_training_changes_encoder_and_projector_and_never_the_llm(llm):
    model = make_model(llm)
    _, tokenizer = llm
    model.train()
    assert model.encoder.training and model.projector.training and not model.llm.training
    assert not any(p.requires_grad for p in model.llm.parameters())
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.trainable_parameters()}

    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    trainable_before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2, weight_decay=0.03)
    batch = batch_of(tokenizer, [SHORT, (SAMPLE.text, SAMPLE.spans)])
    sig = signals(2)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        out = model(batch["input_ids"], batch["attention_mask"], sig, None, batch["labels"])
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert out.n_targets == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(p.grad is None for p in model.llm.parameters())
    for key, value in model.llm.state_dict().items():
        assert torch.equal(value, llm_before[key]), key
    after = model.trainable_state_dict()
    assert not torch.equal(after["projector.proj.weight"], trainable_before["projector.proj.weight"])
    assert not torch.equal(after["encoder.conv.weight"], trainable_before["encoder.conv.weight"])


def test_encoder_checkpointing_gives_the_same_loss_and_gradients(llm):
    _, tokenizer = llm
    batch = batch_of(tokenizer, [SHORT, (SAMPLE.text, SAMPLE.spans)])
    sig = signals(2)
    grads = []
    for checkpointing in (False, True):
        model = make_model(llm, seed=4)
        model.encoder_checkpointing = checkpointing
        model.train()
        out = model(batch["input_ids"], batch["attention_mask"], sig, None, batch["labels"])
        out.loss.backward()
        grads.append((out.loss.item(), [p.grad.clone() for p in model.trainable_parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    for plain, checkpointed in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(plain, checkpointed, rtol=1e-5, atol=1e-7)


def test_loss_matches_a_manual_cross_entropy(llm):
    model = make_model(llm).eval()
    _, tokenizer = llm
    batch = batch_of(tokenizer, [SHORT, (SAMPLE.text, SAMPLE.spans)])
    sig = signals(2)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], sig, None, batch["labels"])
    total, count = 0.0, 0
    for b in range(2):
        logp = torch.log_softmax(out.logits[b], dim=-1)
        for t in range(1, batch["labels"].shape[1]):
            label = int(batch["labels"][b, t])
            if label != IGNORE_INDEX:
                total -= float(logp[t - 1, label])
                count += 1
    assert out.n_targets == count
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("projector", ["linear", "vocab"])
def test_projectors_run_forward_and_backward(llm, projector):
    model = make_model(llm, projector=projector, k=2).train()
    _, tokenizer = llm
    batch = batch_of(tokenizer, [SHORT, (SAMPLE.text, SAMPLE.spans)], k=2)
    out = model(batch["input_ids"], batch["attention_mask"], signals(2), None, batch["labels"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for name, param in list(model.projector.named_parameters()) + list(model.encoder.named_parameters()):
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert any(param.grad.abs().sum() > 0 for param in model.projector.parameters())


def test_vocab_projector_blends_the_frozen_embedding_rows(llm):
    model = make_model(llm, projector="vocab", k=2).eval()
    assert isinstance(model.projector, VocabProjector)
    embedding = model.llm.get_input_embeddings().weight  # [V, H]
    sig = signals(3)
    with torch.no_grad():
        features = model.encoder.forward_features(sig, torch.ones(3, N_LEADS, dtype=torch.bool))
        weights = model.projector.weights(features)  # [3, 2, V]
        projected = model.project(sig)  # [3, 2, H]
    assert weights.shape == (3, 2, embedding.shape[0])
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(3, 2), atol=1e-6)  # one softmax per ECG token
    excluded = model.projector.excluded_ids
    assert model.ecg_token_id in excluded and (weights[..., excluded] == 0).all()
    assert torch.allclose(projected, weights @ embedding, atol=1e-6)
    # a convex blend lies within the rows' coordinate-wise range
    assert (projected <= embedding.max(0).values + 1e-6).all() and (projected >= embedding.min(0).values - 1e-6).all()
    assert not any(t.data_ptr() == embedding.data_ptr() for t in model.trainable_state_dict().values())


def test_hard_vocab_projector_puts_one_real_word_and_passes_the_softmax_gradient(llm):
    model = make_model(llm, projector="vocab", k=2, hard=True)
    embedding = model.llm.get_input_embeddings().weight  # [V, H]
    excluded = model.projector.excluded_ids
    sig = signals(4)
    mask = torch.ones(4, N_LEADS, dtype=torch.bool)
    model.eval()
    with torch.no_grad():
        features = model.encoder.forward_features(sig, mask)
        logits = model.projector.logits(features).view(4, 2, -1)
        logits[..., excluded] = float("-inf")
        words = logits.argmax(-1)  # [4, 2]: eval takes the most probable word, no noise
        assert torch.equal(model.project(sig), embedding[words])
        assert torch.equal(model.project(sig), model.project(sig))
    assert not set(words.flatten().tolist()) & set(excluded)
    model.train()
    torch.manual_seed(5)
    projected = model.project(sig)  # [4, 2, H]: Gumbel-perturbed choice, still exact word rows
    chosen = (projected.detach().unsqueeze(-2) == embedding).all(-1)  # [4, 2, V]
    assert (chosen.sum(-1) == 1).all() and not chosen[..., excluded].any()
    projected.pow(2).sum().backward()  # the gradient reaches the logits through the softmax
    assert model.projector.logits.weight.grad is not None and model.projector.logits.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)


def test_hard_vocab_projector_survives_save_and_load(llm, tmp_path):
    model = make_model(llm, projector="vocab", hard=True).eval()
    _, tokenizer = llm
    folder = model.save(tmp_path / "aligned")
    assert json.loads((folder / "config.json").read_text())["projector"]["hard"] is True
    loaded = ECGLM.load(folder, model.llm, encoder=TinyEncoder(), tokenizer=tokenizer).eval()
    assert loaded.projector.hard
    with torch.no_grad():
        assert torch.equal(loaded.project(signals(3)), model.project(signals(3)))


# --------------------------------------------------------------------------------------- save/load
@pytest.mark.parametrize("projector", ["linear", "vocab"])
def test_save_load_round_trip_gives_identical_outputs(llm, tmp_path, projector):
    model = make_model(llm, projector=projector, k=2, seed=3)
    _, tokenizer = llm
    model.train()
    batch = batch_of(tokenizer, [SHORT, (SAMPLE.text, SAMPLE.spans)], k=2)
    sig = signals(2)
    model(batch["input_ids"], batch["attention_mask"], sig)  # moves the batch-norm running stats
    model.eval()
    with torch.no_grad():
        before = model(batch["input_ids"], batch["attention_mask"], sig).logits
    folder = model.save(tmp_path / "aligned")

    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    assert set(saved) == set(model.trainable_state_dict())
    assert all(k.startswith(("encoder.", "projector.")) for k in saved)
    n_llm = sum(p.numel() for p in model.llm.parameters())
    n_saved = sum(v.numel() for v in saved.values())
    n_trainable = sum(v.numel() for v in model.trainable_state_dict().values())
    assert n_saved == n_trainable < n_llm
    config = json.loads((folder / "config.json").read_text())
    assert config["projector"]["kind"] == projector and config["projector"]["num_ecg_tokens"] == 2
    assert config["base_llm"]["name_or_path"].endswith("tiny") and config["ecg_token_id"] == model.ecg_token_id

    torch.manual_seed(99)  # a fresh encoder with other weights; load replaces them
    loaded = ECGLM.load(folder, model.llm, encoder=TinyEncoder(), tokenizer=tokenizer).eval()
    with torch.no_grad():
        after = loaded(batch["input_ids"], batch["attention_mask"], sig).logits
    assert torch.equal(before, after)


def test_the_pipeline_encoder_is_rebuilt_from_the_saved_config(llm, tmp_path):
    from ecglm.models.encoder import ResNet1d18

    model, tokenizer = llm
    torch.manual_seed(0)
    encoder = ResNet1d18(n_classes=5, base_width=4, dilation=2)
    ecglm_model = ECGLM(encoder, model, tokenizer.convert_tokens_to_ids(ECG_TOKEN))
    assert ecglm_model.feature_dim == 32
    config = json.loads((ecglm_model.save(tmp_path / "aligned") / "config.json").read_text())
    assert config["encoder"] == {
        "feature_dim": 32, "target": "ecglm.encoder:ResNet1d18",
        "kwargs": {"n_classes": 5, "base_width": 4, "n_leads": 12, "dilation": 2},
    }
    torch.manual_seed(1)
    loaded = ECGLM.load(tmp_path / "aligned", model).eval()
    assert isinstance(loaded.encoder, ResNet1d18) and loaded.encoder.dilation == 2
    batch = batch_of(tokenizer, [SHORT, SHORT])
    microvolts = signals(2) * 1000  # [2, 12, T]
    lead_mask = torch.ones(2, N_LEADS, dtype=torch.bool)
    lead_mask[1, 3:9] = False
    with torch.no_grad():
        before = ecglm_model.eval()(batch["input_ids"], batch["attention_mask"], microvolts, lead_mask).logits
        after = loaded(batch["input_ids"], batch["attention_mask"], microvolts, lead_mask).logits
    assert torch.equal(before, after)


def test_load_names_the_file_that_is_wrong(llm, tmp_path):
    model = make_model(llm)
    folder = model.save(tmp_path / "aligned")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(StageError, match="model.safetensors"):
        ECGLM.load(folder, model.llm, encoder=TinyEncoder())
    with pytest.raises(StageError, match="encoder.target .* is not a known encoder"):
        ECGLM.load(folder, model.llm)  # the test encoder lives outside the package: never imported


# ------------------------------------------------------------------------------------------ scoring
def manual_continuation_logprob(model, tokenizer, prompt: str, continuation: str, sig) -> float:
    """Unbatched reference: the prompt's tokens are a prefix of the full text's; sum the rest's log-probs."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + continuation)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids
    ids = torch.tensor([full_ids])
    with torch.no_grad():
        embeds = model.embed(ids, sig)
        logits = model.llm(inputs_embeds=embeds).logits[0]  # [L, V]
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[t - 1, full_ids[t]]) for t in range(len(prompt_ids), len(full_ids)))


def test_sequence_logprob_matches_a_manual_computation(llm):
    model = make_model(llm, seed=5)
    _, tokenizer = llm
    prompts = [
        "The ECG signal is <ecg>. The ECG report indicates",
        "This person is a 63-year-old male. The ECG signal is <ecg>. Lead V6:",
    ]
    continuations = [" atrial fibrillation", " st elevation", " A"]
    sig = signals(2)
    logprob, counts = continuation_logprob(model, tokenizer, prompts, continuations, sig, batch_size=4)
    assert logprob.shape == (2, 3) and (counts > 0).all()
    for i, prompt in enumerate(prompts):
        for j, cont in enumerate(continuations):
            manual = manual_continuation_logprob(model, tokenizer, prompt, cont, sig[i : i + 1])
            assert logprob[i, j].item() == pytest.approx(manual, rel=1e-5, abs=1e-4)

    texts = [(p + " atrial fibrillation", [(len(p), len(p) + 20)]) for p in prompts]
    seq, _ = sequence_logprob(model, tokenizer, texts, sig, batch_size=1)
    assert torch.allclose(seq, logprob[:, 0], rtol=1e-5, atol=1e-4)
    other, _ = sequence_logprob(model, tokenizer, texts, signals(2, seed=7), batch_size=1)
    assert (seq != other).all()  # the same computation with other ECGs: the ECG is read


def test_score_next_token_equals_single_token_continuations(llm):
    model = make_model(llm, seed=6)
    _, tokenizer = llm
    prompts = [
        "The ECG signal is <ecg>. Please identify and choose one of A, B, C, D or E as answer.\nAnswer:",
        "The ECG signal is <ecg>. Answer:",
    ]
    letters = [" A", " B", " C", " D", " E"]
    assert len(set(next_token_ids(tokenizer, prompts[0], letters))) == 5
    sig = signals(2)
    scores = score_next_token(model, tokenizer, prompts, letters, sig)
    reference, counts = continuation_logprob(model, tokenizer, prompts, letters, sig)
    assert (counts == 1).all()
    assert torch.allclose(scores, reference, atol=1e-5)
    assert (scores < 0).all()
    with pytest.raises(ValueError, match="not one token"):
        next_token_ids(tokenizer, prompts[0], [" atrial fibrillation"])


def test_text_only_scoring_needs_no_signal(llm):
    model = make_model(llm)
    _, tokenizer = llm
    text = "The ECG report indicates atrial fibrillation."
    start, end = text.index(" atrial"), text.index(".")
    span = TargetSpan(start, end, "report")
    logprob, counts = sequence_logprob(model, tokenizer, [(text, [span])])
    manual = manual_continuation_logprob(model, tokenizer, text[:start], text[start:end], None)
    assert counts.item() >= 2 and logprob.item() == pytest.approx(manual, rel=1e-5, abs=1e-4)


def _manual_greedy(model, tokenizer, prompt: str, sig: torch.Tensor, steps: int) -> list[int]:
    """Greedy decoding the slow way: one full forward pass (no cache, no padding) per new token."""
    ids = encode_sample(tokenizer, prompt, [], 256)["input_ids"].unsqueeze(0)  # [1, L]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            embeds = model.embed(ids, sig)  # [1, L, H]
            logits = model.llm(inputs_embeds=embeds, use_cache=False).logits  # [1, L, V]
            token = int(logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return new


def test_generate_greedy_matches_a_slow_greedy_loop_whatever_the_batch(llm):
    model = make_model(llm, projector="vocab", seed=7).eval()
    _, tokenizer = llm
    prompts = [
        "This person is a 63-year-old male. The ECG signal is <ecg>. The ECG report indicates",
        "The ECG signal is <ecg>. The ECG report indicates",  # shorter: left padding in a batch
        "This person is a female of unknown age with a height of 160 cm. The ECG signal is <ecg>. The ECG report",
    ]
    sig = signals(3, seed=11)
    steps = 6
    batched = generate_greedy(model, tokenizer, prompts, sig, max_new_tokens=steps, batch_size=3)
    single = [generate_greedy(model, tokenizer, [p], sig[i:i + 1], max_new_tokens=steps)[0] for i, p in enumerate(prompts)]
    assert batched == single
    for i, prompt in enumerate(prompts):
        expected = tokenizer.decode(_manual_greedy(model, tokenizer, prompt, sig[i:i + 1], steps), skip_special_tokens=True)
        assert batched[i] == expected
    assert all(batched)  # every row generated words
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_greedy(model, tokenizer, prompts, sig, max_new_tokens=0)
