"""Build a tiny random Llama and a fast tokenizer in a folder, so tests load them like a real LLM.

No network: the tokenizer is a byte-pair encoding trained here with the ``tokenizers`` library on a few
template sentences, with a SentencePiece-style ``Metaspace`` pre-tokenizer (like Llama's: a word's
token carries its leading space, ``"▁normal"``, and its offsets include that space) and a post-processor
that prepends BOS. The model is a 2-layer ``LlamaForCausalLM`` with hidden size 32, random weights
from a fixed seed, saved as safetensors with ``save_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "This person is a 63-year-old male with a height of 172 cm and a weight of 80 kg.",
    "This person is an 81-year-old female of unknown age and sex.",
    "The ECG signal is <ecg>. The ECG report indicates sinus rhythm, normal ecg.",
    "The ECG report indicates atrial fibrillation, left ventricular hypertrophy, st depression.",
    "The anomalies in general: no abnormality, lead I: normal, lead II: st elevation, lead V1: q wave.",
    "Abnormalities detected in general: prolonged qt, Lead aVR: normal, Lead V6: inverted t wave.",
    "Based on the given ECG signal, please identify which type (A-E) it belongs to.",
    "A. Normal B. Myocardial Infarction C. ST/T Change D. Conduction Disturbance E. Hypertrophy",
    "Please identify and choose one of A, B, C, D or E as answer. Answer: A",
]
ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;-/()'")

HIDDEN = 32


def build_tokenizer(*, with_ecg_token: bool = True, vocab_size: int = 300):
    """A fast tokenizer (``PreTrainedTokenizerFast``) with ``<s>`` BOS, ``</s>`` EOS, ``<unk>`` and, if asked, ``<ecg>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] + (["<ecg>"] if with_ecg_token else [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=ALPHABET)
    tok.train_from_iterator(SENTENCES * 4, trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    kwargs = {"additional_special_tokens": ["<ecg>"]} if with_ecg_token else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", **kwargs
    )


def build_tiny_llm(
    folder: str | Path,
    *,
    with_ecg_token: bool = True,
    seed: int = 0,
    layers: int = 2,
    extra_rows: int = 0,
    tied: bool = False,
) -> Path:
    """Save a tiny random ``LlamaForCausalLM`` (hidden 32, 4 heads) and its tokenizer in ``folder``; return it.

    ``extra_rows`` adds spare embedding rows beyond the tokenizer (as padded real checkpoints have); ``tied``
    ties the output head to the embeddings (as the demo LLM and SmolLM2 do).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer(with_ecg_token=with_ecg_token)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + extra_rows,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger random weights than the default 0.02 so logits differ visibly
        model.get_input_embeddings().weight.normal_(0.0, 1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
