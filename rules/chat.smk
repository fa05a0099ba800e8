# The conversation fine-tuning of the aligned model of chat.align_from: results/{run}/chat/, the folder that
# `ecglm chat --model` and the Python API (ecglm.load) talk with. Resume checkpoints outside the outputs.

rule finetune_chat:
    input:
        records=f"{RESULTS}/data/records.parquet",
        reports=f"{RESULTS}/text/reports_en.parquet",
        findings=f"{RESULTS}/text/findings.parquet",
        signals=f"{RESULTS}/data/signals_{FS}.npy",
        conversations=chat_conversations(),
        qa=f"{RESULTS}/qa/data/train.parquet" if CHAT_QA else [],
        aligned=f"{RESULTS}/align/{CHAT_FROM}/model.safetensors",
        llm=lambda wildcards: LLM_INPUTS[VARIANT_LLMS[CHAT_FROM]],
    output:
        model=f"{RESULTS}/chat/model.safetensors",
        adapter=f"{RESULTS}/chat/adapter/adapter_model.safetensors",
        metrics=f"{RESULTS}/chat/metrics.json",
        ecg_input=f"{RESULTS}/chat/ecg_input.json",
        card=report(f"{RESULTS}/chat/MODEL_CARD.md", caption="../workflow/report/model_card.rst", category="Chat"),
    params:
        qa=lambda wildcards, input: f"--qa {shlex.quote(os.path.dirname(input.qa))}" if CHAT_QA else "",
        conversations=lambda wildcards, input: " ".join(shlex.quote(p) for p in input.conversations),
        aligned=lambda wildcards, input: os.path.dirname(input.aligned),
        llm=LLM_DIRS[VARIANT_LLMS[CHAT_FROM]],
        out=lambda wildcards, output: os.path.dirname(output.model),
        resume=f"{RESULTS}/.resume/chat",
        threads=RESOURCES["threads"],  # torch's threads: the configured number, whatever --cores (common.smk)
        ecg_source="demo" if DATA_SOURCE == "demo" else "ptbxl",
        qa_turns=CHAT["qa_turns"],
        findings_share=CHAT["findings_share"],
        check_samples=CHAT["ecg_check_samples"],
        sets=set_args({**config["finetune_chat"], "seed": config["seed"]}),
    log:
        f"{LOGS}/finetune_chat.log",
    benchmark:
        f"{BENCHMARKS}/finetune_chat.tsv"
    threads: RESOURCES["threads"]
    conda:
        ENV
    resources:
        mem_mb=llm_mem_mb(2, variant=CHAT_FROM),
        runtime=RESOURCES["runtime_min"],
        gpu=ONE_GPU,
    shell:
        "ecglm finetune-chat --records {input.records:q} --reports {input.reports:q} --findings {input.findings:q}"
        " --signals-npy {input.signals:q} --conversations {params.conversations} {params.qa}"
        " --qa-turns {params.qa_turns} --findings-share {params.findings_share}"
        " --ecg-check-samples {params.check_samples} --ecg-source {params.ecg_source}"
        " --aligned {params.aligned:q} --llm {params.llm:q} --out {params.out:q} --resume-dir {params.resume:q}"
        " --threads {params.threads} {params.sets} --no-progress > {log:q} 2>&1"
