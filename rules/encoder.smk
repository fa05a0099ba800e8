# The ResNet-18 1D ECG encoder: pretrained on the diagnostic superclasses (the ECG-LM encoder), and
# trained on each task's labels for the supervised baseline.


wildcard_constraints:
    task="diagnostic|rhythm|form",
    text="tfidf|llm",


rule train_encoder:
    input:
        records=f"{RESULTS}/data/records.parquet",
        signals=f"{RESULTS}/data/signals_{FS}.npy",
    output:
        model=f"{RESULTS}/encoder/pretrained/model.safetensors",
        config=f"{RESULTS}/encoder/pretrained/config.yaml",
        metrics=f"{RESULTS}/encoder/pretrained/metrics.json",
    params:
        out=lambda wildcards, output: os.path.dirname(output.model),
        threads=RESOURCES["threads"],  # torch's threads: the configured number, whatever --cores (common.smk)
        sets=set_args({**config["encoder"], "seed": config["seed"]}),
    log:
        f"{LOGS}/train_encoder.log",
    benchmark:
        f"{BENCHMARKS}/train_encoder.tsv"
    threads: RESOURCES["threads"]
    priority: 20  # every alignment waits for it
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
        gpu=ONE_GPU,
    shell:
        "ecglm train-encoder --records {input.records:q} --signals {input.signals:q} --out {params.out:q}"
        " --threads {params.threads} {params.sets} --no-progress > {log:q} 2>&1"


rule train_supervised_encoder:
    input:
        records=f"{RESULTS}/data/records.parquet",
        signals=f"{RESULTS}/data/signals_{FS}.npy",
        after=BASELINE_AFTER,  # an order, not an input (common.smk): the 2-thread LLM build first
    output:
        model=f"{RESULTS}/encoder/supervised-{{task}}/model.safetensors",
        config=f"{RESULTS}/encoder/supervised-{{task}}/config.yaml",
        metrics=f"{RESULTS}/encoder/supervised-{{task}}/metrics.json",
    params:
        out=lambda wildcards, output: os.path.dirname(output.model),
        threads=BASELINE_THREADS,  # torch's threads: the configured number, whatever --cores (common.smk)
        sets=lambda wildcards: set_args(
            {
                **config["encoder"],
                "seed": config["seed"],
                "label_column": TASK_LABEL_COLUMNS[wildcards.task],
                "classes": [code for _, code, _ in TASKS[wildcards.task]],
            }
        ),
    log:
        f"{LOGS}/train_supervised_encoder/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/train_supervised_encoder/{{task}}.tsv"
    threads: BASELINE_THREADS
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
        gpu=ONE_GPU,
    shell:
        "ecglm train-encoder --records {input.records:q} --signals {input.signals:q} --out {params.out:q}"
        " --threads {params.threads} {params.sets} --no-progress > {log:q} 2>&1"


# The SimCLR baseline's encoder: the same ResNet-18, pretrained contrastively on the training ECGs with
# no label (the simclr section); its linear probes are baselines simclr and random-probe (evaluate.smk).
rule train_simclr:
    input:
        records=f"{RESULTS}/data/records.parquet",
        signals=f"{RESULTS}/data/signals_{FS}.npy",
        after=BASELINE_AFTER,  # an order, not an input (common.smk): the 2-thread LLM build first
    output:
        model=f"{RESULTS}/encoder/simclr/model.safetensors",
        config=f"{RESULTS}/encoder/simclr/config.yaml",
        metrics=f"{RESULTS}/encoder/simclr/metrics.json",
    params:
        out=lambda wildcards, output: os.path.dirname(output.model),
        threads=BASELINE_THREADS,  # torch's threads: the configured number, whatever --cores (common.smk)
        sets=set_args({**config["simclr"], "seed": config["seed"]}),
    log:
        f"{LOGS}/train_simclr.log",
    benchmark:
        f"{BENCHMARKS}/train_simclr.tsv"
    threads: BASELINE_THREADS
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
        gpu=ONE_GPU,
    shell:
        "ecglm train-simclr --records {input.records:q} --signals {input.signals:q} --out {params.out:q}"
        " --threads {params.threads} {params.sets} --no-progress > {log:q} 2>&1"


# The METS baselines' encoder: the same ResNet-18, trained contrastively against a frozen text encoder's
# embeddings of the training reports (the mets section): text tfidf for the METS row, llm (the LLM of
# evaluate.mets_variant) for the LLM + METS row; zero-shot by the nearest class description (evaluate.smk).
rule train_mets:
    input:
        unpack(mets_inputs),
    output:
        model=f"{RESULTS}/encoder/mets-{{text}}/model.safetensors",
        config=f"{RESULTS}/encoder/mets-{{text}}/config.yaml",
        metrics=f"{RESULTS}/encoder/mets-{{text}}/metrics.json",
    params:
        out=lambda wildcards, output: os.path.dirname(output.model),
        threads=BASELINE_THREADS,  # torch's threads: the configured number, whatever --cores (common.smk)
        sets=mets_sets,
    log:
        f"{LOGS}/train_mets/{{text}}.log",
    benchmark:
        f"{BENCHMARKS}/train_mets/{{text}}.tsv"
    threads: BASELINE_THREADS
    conda:
        ENV
    resources:
        mem_mb=mets_mem_mb,
        runtime=RESOURCES["runtime_min"],
        gpu=ONE_GPU,
    shell:
        "ecglm train-mets --records {input.records:q} --reports {input.reports:q} --signals {input.signals:q}"
        " --out {params.out:q} --threads {params.threads} {params.sets} --no-progress > {log:q} 2>&1"
