# Alignment: encoder + projector trained against the frozen LLM, one model per variant. Resume
# checkpoints live in results/{run}/.resume/, outside the declared outputs (Snakemake deletes those
# when a job fails), so re-running a killed or failed job resumes where it stopped.


wildcard_constraints:
    variant="|".join(VARIANTS) or "NONE",


rule expand_pairs_without_expansion:
    input:
        records=f"{RESULTS}/data/records.parquet",
        reports=f"{RESULTS}/text/reports_en.parquet",
        findings=f"{RESULTS}/text/findings.parquet",
    output:
        pairs=directory(f"{RESULTS}/pairs-noexp"),
    params:
        shard_rows=config["expand"]["shard_rows"],
        seed=config["seed"],
    log:
        f"{LOGS}/expand_pairs_without_expansion.log",
    benchmark:
        f"{BENCHMARKS}/expand_pairs_without_expansion.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm expand --records {input.records:q} --reports {input.reports:q} --findings {input.findings:q}"
        " --out {output.pairs:q} --copies 0 --shard-rows {params.shard_rows} --seed {params.seed}"
        " --no-progress > {log:q} 2>&1"


rule align_model:
    input:
        pairs=lambda wildcards: pairs_dir(wildcards.variant),
        signals=f"{RESULTS}/data/signals_{FS}.npy",
        records=f"{RESULTS}/data/records.parquet",
        llm=lambda wildcards: LLM_INPUTS[VARIANT_LLMS[wildcards.variant]],
        encoder=lambda wildcards: (
            [f"{RESULTS}/encoder/pretrained/model.safetensors"]
            if VARIANTS[wildcards.variant]["encoder_pretrain"]
            else []
        ),
        after=after_demo_llm,  # an order, not an input (common.smk): the 2-thread LLM build first
    output:
        model=f"{RESULTS}/align/{{variant}}/model.safetensors",
        config=f"{RESULTS}/align/{{variant}}/config.json",
        metrics=f"{RESULTS}/align/{{variant}}/metrics.json",
    params:
        out=lambda wildcards, output: os.path.dirname(output.model),
        resume=f"{RESULTS}/.resume/align/{{variant}}",
        threads=ALIGN_THREADS,  # torch's threads: the configured number, whatever --cores (common.smk)
        sets=align_sets,
    log:
        f"{LOGS}/align_model/{{variant}}.log",
    benchmark:
        f"{BENCHMARKS}/align_model/{{variant}}.tsv"
    threads: ALIGN_THREADS
    priority: 10  # alignments before the evaluations of already aligned variants (the longest path first)
    conda:
        ENV
    resources:
        mem_mb=llm_mem_mb(2, processes=max(1, RESOURCES["gpus"])),
        runtime=RESOURCES["runtime_min"],
        gpu=RESOURCES["gpus"],
    shell:
        align_launcher() + " align --pairs {input.pairs:q} --signals-npy {input.signals:q} --records {input.records:q}"
        " --out {params.out:q} --resume-dir {params.resume:q} --threads {params.threads} {params.sets} --no-progress > {log:q} 2>&1"
