"""GPU benchmark of alignment steps: bf16 step time, tokens per second, MFU and peak memory.

Run only where a GPU is lent; nothing depends on it. Two LLMs, both frozen, behind the real ECG-LM splice
(ResNet-18 encoder, linear projector, one <ecg> token) and the real loss (next-token on the target spans):

- SmolLM2-135M-Instruct, the folder `ecglm fetch-llm` made (``--smollm2 DIR``; skipped when absent);
- a randomly initialised Llama of the 7B shape (LLaMA-2-7B / BioMedGPT-LM-7B: hidden 4096, 32 layers,
  32 heads, MLP 11008, vocabulary 32000), built from its config: no weights can be fetched there.

FLOPs per step: the LLM's forward (2 N T) and its backward to the inputs only (2 N T; the LLM is frozen,
so no weight gradients) = 4 N T for N LLM parameters and T tokens; the encoder is left out (< 1%). MFU is
that over the step time and the GPU's dense bf16 peak (``--peak-tflops``, default 989, an H100/H200 SXM).

    python bench/gpu_align.py --smollm2 resources/llm/gguf/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e
    python bench/gpu_align.py --device cpu --tiny      # the script itself, on a CPU, in seconds

Finishes in about 4 minutes on one H100 (``--steps``, ``--batch`` and ``--seq`` set the work).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def llama_7b_config(tiny: bool):
    from transformers import LlamaConfig

    if tiny:  # the same code path at a size a CPU runs in seconds
        return LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=4, vocab_size=32000, max_position_embeddings=4096)  # fmt: skip
    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)  # fmt: skip


def build(llm, device, dtype):
    import torch

    from ecglm.models.encoder import ResNet1d18
    from ecglm.models.llm import freeze
    from ecglm.models.multimodal import ECGLM

    llm.to(device=device, dtype=dtype)
    freeze(llm)
    ecg_id = llm.config.vocab_size - 1  # any id: the bench builds input ids by hand
    encoder = ResNet1d18(n_classes=5, base_width=64).to(device)
    model = ECGLM(encoder, llm, ecg_id, projector="linear", num_ecg_tokens=1).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, ecg_id, torch.optim.AdamW(params, lr=1e-4, weight_decay=0.03)


def bench_one(name, llm, args, device):
    import torch

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, ecg_id, optimizer = build(llm, device, dtype)
    n_llm = sum(p.numel() for p in llm.parameters())
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, llm.config.vocab_size - 2, (args.batch, args.seq), generator=gen)  # [B, T]
    ids[:, 20] = ecg_id  # one <ecg> per sample, after a short patient sentence
    labels = ids.clone()
    labels[:, :40] = -100  # the loss on the report and lead descriptions only
    mask = torch.ones_like(ids)
    signal = torch.randint(-2000, 2000, (args.batch, 12, 1000), generator=gen, dtype=torch.int16)  # [B, 12, 1000]
    lead_mask = torch.ones(args.batch, 12, dtype=torch.bool)
    ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(ids, mask, signal, lead_mask, labels)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    tokens = args.batch * args.seq
    flops = 4 * n_llm * tokens
    result = {
        "llm": name, "llm_parameters": n_llm, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "batch": args.batch, "seq": args.seq, "steps_timed": len(times), "median_step_s": round(step_s, 4),
        "tokens_per_s": round(tokens / step_s, 1), "tflops_per_s": round(flops / step_s / 1e12, 2),
        "mfu": round(flops / step_s / (args.peak_tflops * 1e12), 4) if device.type == "cuda" else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }  # fmt: skip
    print(json.dumps(result), flush=True)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> int:
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smollm2", type=Path, default=None, help="the SmolLM2 folder made by `ecglm fetch-llm`")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=12, help="samples per step (the paper's micro-batch: 12)")
    p.add_argument("--seq", type=int, default=512, help="tokens per sample")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200 SXM: 989)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer stand-in for the 7B model (checks the script on a CPU)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or --device cpu --tiny to check the script")
    torch.manual_seed(0)
    results = []
    if args.smollm2 is not None and args.smollm2.is_dir():
        results.append(bench_one("SmolLM2-135M-Instruct (Q4_1, dequantized)",
                                 AutoModelForCausalLM.from_pretrained(args.smollm2, use_safetensors=True), args, device))  # fmt: skip
    with torch.device(device if device.type == "cuda" else "cpu"):  # build the 7B model where it will run
        llm = LlamaForCausalLM(llama_7b_config(args.tiny)).to(torch.bfloat16 if device.type == "cuda" else torch.float32)
    results.append(bench_one("Llama 7B shape, random weights" + (" (tiny stand-in)" if args.tiny else ""), llm, args, device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
