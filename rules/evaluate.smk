# Zero-shot classification of every variant (two scoring modes), the baselines, and the result tables.


wildcard_constraints:
    mode="mcq|likelihood|generate",
    kind="majority|supervised|simclr|random-probe|mets|llm-mets",


rule evaluate_zero_shot:
    input:
        unpack(zero_shot_inputs),
    output:
        results=expand(f"{RESULTS}/eval/{{{{variant}}}}/{{{{task}}}}-{{mode}}.json", mode=MODES),
    params:
        options=zero_shot_args,
        modes=" ".join(MODES),
        out=lambda wildcards: f"{RESULTS}/eval/{wildcards.variant}/{wildcards.task}-{{mode}}.json",
        batch_size=EVALUATE["batch_size"],
        max_new_tokens=EVALUATE["max_new_tokens"],
        likelihood_score=EVALUATE["likelihood_score"],
        seed=lambda wildcards: variant_seed(config, wildcards.variant),
        threads=RESOURCES["eval_threads"],  # torch's threads: the configured number, whatever --cores (common.smk)
    log:
        f"{LOGS}/evaluate_zero_shot/{{variant}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_zero_shot/{{variant}}-{{task}}.tsv"
    threads: RESOURCES["eval_threads"]
    conda:
        ENV
    resources:
        mem_mb=llm_mem_mb(2),
        runtime=RESOURCES["runtime_min"],
        gpu=ONE_GPU,
    shell:
        "ecglm evaluate --records {input.records:q} --signals {input.signals:q} --findings {input.findings:q}"
        " --task {wildcards.task} --mode {params.modes} {params.options} --threads {params.threads} --batch-size {params.batch_size}"
        " --max-new-tokens {params.max_new_tokens} --likelihood-score {params.likelihood_score} --seed {params.seed} --out {params.out:q} --no-progress"
        " > {log:q} 2>&1"


rule evaluate_baseline:
    input:
        unpack(baseline_inputs),
    output:
        result=f"{RESULTS}/eval/{{kind}}/{{task}}-{{kind}}.json",
    params:
        options=baseline_args,
    log:
        f"{LOGS}/evaluate_baseline/{{kind}}-{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_baseline/{{kind}}-{{task}}.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm evaluate-baseline --kind {wildcards.kind} --records {input.records:q} --task {wildcards.task}"
        " {params.options} --out {output.result:q} --no-progress > {log:q} 2>&1"


rule make_tables:
    input:
        results=eval_outputs(),
    output:
        markdown=report(f"{RESULTS}/tables/classification.md", caption="../workflow/report/classification.rst",
                        category="Zero-shot classification"),
        csv=f"{RESULTS}/tables/classification.csv",
        protocol=f"{RESULTS}/tables/classification.protocol.json",
        ablation=report(f"{RESULTS}/tables/ablation.md", caption="../workflow/report/ablation.rst",
                        category="Ablations"),
        ablation_csv=f"{RESULTS}/tables/ablation.csv",
    params:
        eval_dir=lambda wildcards, input: os.path.dirname(os.path.dirname(input.results[0])),
        out=lambda wildcards, output: os.path.splitext(output.markdown)[0],
        ablation=lambda wildcards, output: os.path.splitext(output.ablation)[0],
        config_json=json.dumps(config, sort_keys=True),
    log:
        f"{LOGS}/make_tables.log",
    benchmark:
        f"{BENCHMARKS}/make_tables.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=1024,
        runtime=10,
    shell:
        "ecglm tables --eval-dir {params.eval_dir:q} --out {params.out:q} --ablation-out {params.ablation:q}"
        " --config-json {params.config_json:q}"
        " > {log:q} 2>&1"


# The figures of the HTML report (`snakemake --report results/{run}/report.html`): training curves, the
# confusion matrices and a few test ECGs of one variant and mode (REPORT_VARIANT, REPORT_MODE in common.smk).
rule plot_report:
    input:
        records=f"{RESULTS}/data/records.parquet",
        signals=f"{RESULTS}/data/signals_{FS}.npy",
        findings=f"{RESULTS}/text/findings.parquet",
        encoder=f"{RESULTS}/encoder/pretrained/metrics.json",
        aligns=[f"{RESULTS}/align/{variant}/metrics.json" for variant in ALIGNED],
        evals=[f"{RESULTS}/eval/{REPORT_VARIANT}/{task}-{REPORT_MODE}.json" for task in TASK_NAMES],
    output:
        curves=report(f"{RESULTS}/report/curves.svg", caption="../workflow/report/curves.rst", category="Training"),
        confusion=report(f"{RESULTS}/report/confusion.svg", caption="../workflow/report/confusion.rst",
                         category="Zero-shot classification"),
        ecgs=report(f"{RESULTS}/report/ecgs.svg", caption="../workflow/report/ecgs.rst", category="Test ECGs"),
    params:
        aligns=lambda wildcards, input: " ".join(f"--align {v}={shlex.quote(p)}" for v, p in zip(ALIGNED, input.aligns)),
        evals=lambda wildcards, input: " ".join(f"--eval {shlex.quote(p)}" for p in input.evals),
        out=lambda wildcards, output: os.path.dirname(output.curves),
        variant=REPORT_VARIANT,
        mode=REPORT_MODE,
        fs=FS,
    log:
        f"{LOGS}/plot_report.log",
    benchmark:
        f"{BENCHMARKS}/plot_report.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=10,
    shell:
        "ecglm report-figures --records {input.records:q} --signals {input.signals:q} --fs {params.fs}"
        " --findings {input.findings:q} --encoder-metrics {input.encoder:q} {params.aligns} {params.evals}"
        " --variant {params.variant:q} --mode {params.mode} --out {params.out:q} > {log:q} 2>&1"
