"""Why does (or doesn't) the ECG token carry the class? Figures for the demo world's alignment.

For the validation alignment samples (``PAIRS/val``), the mean cross-entropy per target token (the
alignment loss: report and lead-description spans) with the ``<ecg>`` position holding, in turn:

* ``key``      the embedding of the rhythm class's key word (:func:`ecglm.train.demo_llm.key_word`), the
               word that the demo LLM learnt to read in the slot: an oracle for what one token can say;
* ``wrong``    the key word of another rhythm class (the same permutation for every run);
* ``aligned``  the projected ECG of ``--align`` (if given);
* ``generic``  the mean of the aligned tokens over all samples (what a token that ignores the ECG gives).

Per rhythm class and overall. ``aligned`` below ``generic`` means the token carries the ECG; ``key`` below
``aligned`` means a single correct word would beat what the alignment found. With ``--align`` and a vocab
projector it also prints the blend's entropy and the top words per class, and (``--probe``) a
logistic-regression probe of the rhythm class on the encoder's pooled features (train -> val).

    python bench/probe_alignment.py --llm results/demo/llm --pairs results/demo/pairs \
        --records results/demo/data/records.parquet --signals results/demo/data/signals_100.npy \
        [--align results/demo/align/full] [--probe]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecglm.models.llm import load_llm  # noqa: E402
from ecglm.text.prompts import (
    ECG_TOKEN,  # noqa: E402
    task_classes,  # noqa: E402
)
from ecglm.train.demo_llm import key_word, task_class  # noqa: E402
from ecglm.train.pairs_data import PairsDataset, collate_pairs  # noqa: E402


def rhythm_of(records: Path) -> dict[int, str | None]:
    rec = pl.read_parquet(records, columns=["ecg_id", "rhythm"])
    return {int(i): task_class(r, "rhythm") for i, r in zip(rec["ecg_id"].to_list(), rec["rhythm"].to_list())}


def word_embedding(llm, tokenizer, word: str) -> torch.Tensor:
    """The mean input embedding of ``word``'s tokens (one token for every key word of the demo vocabulary)."""
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    return llm.get_input_embeddings().weight[ids].mean(0)  # [H]


@torch.no_grad()
def span_losses(llm, batch, slot: torch.Tensor, ecg_id: int) -> torch.Tensor:
    """Per-sample mean cross-entropy over the target tokens with ``slot [B, H]`` at the ``<ecg>`` position."""
    ids = batch["input_ids"]
    embeds = llm.get_input_embeddings()(ids)  # [B, L, H]
    is_ecg = ids == ecg_id
    assert int(is_ecg.sum()) == ids.shape[0], "one <ecg> per sample expected"
    embeds = embeds.masked_scatter(is_ecg.unsqueeze(-1), slot.to(embeds.dtype))
    logits = llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], use_cache=False).logits
    target = batch["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), target.clamp(min=0),
                                           reduction="none")  # [B, L-1]
    keep = (target != -100).float()
    return (ce * keep).sum(1) / keep.sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", required=True)
    ap.add_argument("--pairs", required=True, type=Path)
    ap.add_argument("--records", required=True, type=Path)
    ap.add_argument("--signals", required=True, type=Path)
    ap.add_argument("--align", type=Path)
    ap.add_argument("--probe", action="store_true", help="logistic-regression rhythm probe on encoder features")
    ap.add_argument("--max-samples", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    llm, tok = load_llm(args.llm, dtype="float32", device=torch.device("cpu"))
    ecg_id = tok.convert_tokens_to_ids(ECG_TOKEN)
    classes = task_classes("rhythm")
    keys = {c: word_embedding(llm, tok, key_word("rhythm", c)) for c in classes}
    wrong_of = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
    rhythm = rhythm_of(args.records)
    model = None
    if args.align is not None:
        from ecglm.models.multimodal import ECGLM
        model = ECGLM.load(args.align, llm, tokenizer=tok).eval()

    ds = PairsDataset(args.pairs, "val", args.signals, tok, 384)
    ecg_ids = pl.concat([pl.read_parquet(f, columns=["ecg_id"]) for f in sorted((args.pairs / "val").glob("part-*.parquet"))])["ecg_id"].to_list()
    chosen = [i for i in range(len(ds)) if rhythm.get(int(ecg_ids[i])) is not None][: args.max_samples]
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    aligned_all, labels_all, batches = [], [], []
    for s in range(0, len(chosen), args.batch_size):
        idx = chosen[s: s + args.batch_size]
        batch = collate_pairs([ds[i] for i in idx], tok.pad_token_id)
        cls = [rhythm[int(ecg_ids[i])] for i in idx]
        batches.append((batch, cls))
        labels_all += cls
        for name, slot in (("key", torch.stack([keys[c] for c in cls])),
                           ("wrong", torch.stack([keys[wrong_of[c]] for c in cls]))):
            for c, v in zip(cls, span_losses(llm, batch, slot, ecg_id).tolist()):
                per[name][c].append(v)
        if model is not None:
            with torch.no_grad():
                signals = torch.as_tensor(np.asarray(batch["signal"]), dtype=torch.float32)
                slot = model.project(signals, batch["lead_mask"])[:, 0]  # [B, H]
            aligned_all.append(slot)
            for c, v in zip(cls, span_losses(llm, batch, slot, ecg_id).tolist()):
                per["aligned"][c].append(v)
    if model is not None:
        generic = torch.cat(aligned_all).mean(0)
        for batch, cls in batches:
            slot = generic.expand(len(cls), -1)
            for c, v in zip(cls, span_losses(llm, batch, slot, ecg_id).tolist()):
                per["generic"][c].append(v)

    names = [n for n in ("key", "wrong", "aligned", "generic") if n in per]
    print(f"mean target-token cross-entropy on {len(chosen)} val samples (per rhythm class)")
    print(f"{'class':8s} {'n':>4s} " + " ".join(f"{n:>8s}" for n in names))
    for c in classes:
        n = len(per["key"][c])
        if n:
            print(f"{c:8s} {n:4d} " + " ".join(f"{np.mean(per[m][c]):8.4f}" for m in names))
    print(f"{'all':8s} {len(chosen):4d} " + " ".join(
        f"{np.mean([v for c in classes for v in per[m][c]]):8.4f}" for m in names))
    print(f"{'macro':8s} {'':4s} " + " ".join(
        f"{np.mean([np.mean(per[m][c]) for c in classes if per[m][c]]):8.4f}" for m in names))

    if model is not None:
        emb = llm.get_input_embeddings().weight
        slots = torch.cat(aligned_all)
        print(f"aligned token norm: mean {slots.norm(dim=-1).mean():.2f}; word embeddings: mean {emb.norm(dim=-1).mean():.2f}")
        if model.projector_kind == "vocab":
            with torch.no_grad():
                weights = []
                for batch, _ in batches:
                    signals = torch.as_tensor(np.asarray(batch["signal"]), dtype=torch.float32)
                    feats = model.encoder.forward_features(signals, batch["lead_mask"])
                    weights.append(model.projector.weights(feats)[:, 0])
                w = torch.cat(weights)  # [N, V]
            ent = -(w.clamp_min(1e-12).log() * w).sum(-1)
            lab = np.asarray(labels_all)
            for c in classes:
                m = torch.as_tensor(lab == c)
                if m.any():
                    mean_w = w[m].mean(0)
                    top = torch.topk(mean_w, 5)
                    words = ", ".join(f"{tok.decode([int(i)]).strip()}:{float(p):.2f}" for p, i in zip(top.values, top.indices))
                    print(f"  {c:6s} entropy {ent[m].mean():.2f}  top: {words}")
        if args.probe:
            from sklearn.linear_model import LogisticRegression
            from sklearn.metrics import balanced_accuracy_score

            def features(split: str, limit: int):
                d = PairsDataset(args.pairs, split, args.signals, tok, 384)
                ids = pl.concat([pl.read_parquet(f, columns=["ecg_id"]) for f in sorted((args.pairs / split).glob("part-*.parquet"))])["ecg_id"].to_list()
                rows = [i for i in range(len(d)) if rhythm.get(int(ids[i])) is not None][:limit]
                xs, ys = [], []
                for s in range(0, len(rows), 64):
                    items = [d.signals[i] for i in rows[s: s + 64]]
                    sig = torch.as_tensor(np.stack([it["signal"] for it in items]), dtype=torch.float32)
                    mask = torch.as_tensor(np.stack([it["lead_mask"] for it in items]))
                    with torch.no_grad():
                        xs.append(model.encoder.forward_features(sig, mask).numpy())
                    ys += [rhythm[int(ids[i])] for i in rows[s: s + 64]]
                return np.concatenate(xs), np.asarray(ys)

            xtr, ytr = features("train", 3000)
            xva, yva = features("val", 1000)
            clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(xtr, ytr)
            print(f"rhythm probe on encoder features: val balanced accuracy {balanced_accuracy_score(yva, clf.predict(xva)):.3f}")


if __name__ == "__main__":
    main()
