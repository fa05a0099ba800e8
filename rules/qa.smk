# ECG-QA: the single questions joined to the prepared signals (ecglm qa-data).


if QA["source"] == "download":

    localrules:
        download_ecgqa,

    # ECG-QA's repository at the commit the package pins, each file checked by its git blob id.
    rule download_ecgqa:
        output:
            manifest=f"{ECGQA_DOWNLOAD_DIR}/ecglm-manifest.json",
        params:
            dest=lambda wildcards, output: os.path.dirname(output.manifest),
            retries=PHYSIONET["retries"],
            timeout=PHYSIONET["timeout_s"],
        log:
            f"{LOGS}/download_ecgqa.log",
        benchmark:
            f"{BENCHMARKS}/download_ecgqa.tsv"
        threads: 1
        conda:
            ENV
        resources:
            mem_mb=1024,
            runtime=60,
        shell:
            "ecglm download ecgqa --dest {params.dest:q} --retries {params.retries} --timeout {params.timeout}"
            " --no-progress > {log:q} 2>&1"


rule prepare_qa:
    input:
        records=f"{RESULTS}/data/records.parquet",
        world=f"{DEMO_DIR}/truth.csv" if QA["source"] == "demo" else [],
        downloaded=f"{ECGQA_DOWNLOAD_DIR}/ecglm-manifest.json" if QA["source"] == "download" else [],
    output:
        train=f"{RESULTS}/qa/data/train.parquet",
        valid=f"{RESULTS}/qa/data/valid.parquet",
        test=f"{RESULTS}/qa/data/test.parquet",
        summary=f"{RESULTS}/qa/data/summary.json",
    params:
        ecgqa=qa_folder(),
        out=lambda wildcards, output: os.path.dirname(output.summary),
        wording=QA["wording"],
    log:
        f"{LOGS}/prepare_qa.log",
    benchmark:
        f"{BENCHMARKS}/prepare_qa.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm qa-data --ecgqa {params.ecgqa:q} --records {input.records:q} --out {params.out:q}"
        " --wording {params.wording} > {log:q} 2>&1"


# ECG-QA fine-tuning of the aligned model of qa.align_from (kind ecg), and the blind baseline (kind blind:
# the same questions, steps and seed without the ECG). Resume checkpoints outside the outputs, as align's.
QA_FROM = QA["align_from"]
QA_KINDS = {"ecg": True, "blind": False}
QA_EVALS = {"ecg": ("ecg", "none"), "blind": ("blind", "none"), "shuffled": ("ecg", "shuffled")}


wildcard_constraints:
    qa_kind="ecg|blind",
    qa_eval="ecg|blind|shuffled",


rule finetune_qa:
    input:
        train=f"{RESULTS}/qa/data/train.parquet",
        valid=f"{RESULTS}/qa/data/valid.parquet",
        signals=f"{RESULTS}/data/signals_{FS}.npy",
        aligned=f"{RESULTS}/align/{QA_FROM}/model.safetensors",
        llm=lambda wildcards: LLM_INPUTS[VARIANT_LLMS[QA_FROM]],
    output:
        model=f"{RESULTS}/qa/finetune/{{qa_kind}}/model.safetensors",
        adapter=f"{RESULTS}/qa/finetune/{{qa_kind}}/adapter/adapter_model.safetensors",
        metrics=f"{RESULTS}/qa/finetune/{{qa_kind}}/metrics.json",
    params:
        qa=lambda wildcards, input: os.path.dirname(input.train),
        aligned=lambda wildcards, input: os.path.dirname(input.aligned),
        llm=LLM_DIRS[VARIANT_LLMS[QA_FROM]],
        out=lambda wildcards, output: os.path.dirname(output.model),
        resume=f"{RESULTS}/.resume/qa/{{qa_kind}}",
        sets=lambda wildcards: set_args({**config["finetune_qa"], "seed": config["seed"], "ecg": QA_KINDS[wildcards.qa_kind]}),
    log:
        f"{LOGS}/finetune_qa/{{qa_kind}}.log",
    benchmark:
        f"{BENCHMARKS}/finetune_qa/{{qa_kind}}.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=llm_mem_mb(2, variant=QA_FROM),
        runtime=RESOURCES["runtime_min"],
        gpu=ONE_GPU,
    shell:
        "ecglm finetune-qa --qa {params.qa:q} --signals-npy {input.signals:q} --aligned {params.aligned:q}"
        " --llm {params.llm:q} --out {params.out:q} --resume-dir {params.resume:q} --threads {threads}"
        " {params.sets} --no-progress > {log:q} 2>&1"


rule evaluate_qa:
    input:
        test=f"{RESULTS}/qa/data/test.parquet",
        signals=f"{RESULTS}/data/signals_{FS}.npy",
        model=lambda wildcards: f"{RESULTS}/qa/finetune/{QA_EVALS[wildcards.qa_eval][0]}/model.safetensors",
        llm=lambda wildcards: LLM_INPUTS[VARIANT_LLMS[QA_FROM]],
    output:
        result=f"{RESULTS}/qa/eval/{{qa_eval}}.json",
    params:
        qa=lambda wildcards, input: os.path.dirname(input.test),
        model=lambda wildcards, input: os.path.dirname(input.model),
        llm=LLM_DIRS[VARIANT_LLMS[QA_FROM]],
        control=lambda wildcards: QA_EVALS[wildcards.qa_eval][1],
        readings=",".join(QA["readings"]),
        max_questions=QA["max_test_questions"],
        batch_size=QA["batch_size"],
        max_new_tokens=QA["max_new_tokens"],
        seed=config["seed"],
    log:
        f"{LOGS}/evaluate_qa/{{qa_eval}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_qa/{{qa_eval}}.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=llm_mem_mb(2, variant=QA_FROM),
        runtime=RESOURCES["runtime_min"],
        gpu=ONE_GPU,
    shell:
        "ecglm evaluate-qa --qa {params.qa:q} --model {params.model:q} --llm {params.llm:q} --signals {input.signals:q}"
        " --control {params.control} --readings {params.readings} --max-questions {params.max_questions}"
        " --seed {params.seed} --batch-size {params.batch_size} --max-new-tokens {params.max_new_tokens}"
        " --threads {threads} --out {output.result:q} > {log:q} 2>&1"


rule evaluate_qa_majority:
    input:
        train=f"{RESULTS}/qa/data/train.parquet",
        test=f"{RESULTS}/qa/data/test.parquet",
    output:
        result=f"{RESULTS}/qa/eval/majority.json",
    params:
        qa=lambda wildcards, input: os.path.dirname(input.test),
        max_questions=QA["max_test_questions"],
        seed=config["seed"],
    log:
        f"{LOGS}/evaluate_qa/majority.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_qa/majority.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm evaluate-qa --qa {params.qa:q} --baseline majority --max-questions {params.max_questions}"
        " --seed {params.seed} --out {output.result:q} > {log:q} 2>&1"


rule make_qa_table:
    input:
        **{name: f"{RESULTS}/qa/eval/{name}.json" for name in ("ecg", "blind", "shuffled", "majority")},
    output:
        markdown=report(f"{RESULTS}/tables/qa.md", caption="../workflow/report/qa.rst", category="ECG-QA"),
        csv=f"{RESULTS}/tables/qa.csv",
    params:
        results=lambda wildcards, input: " ".join(f"--results {name}={shlex.quote(path)}" for name, path in input.items()),
        config_json=json.dumps(config, sort_keys=True),
    log:
        f"{LOGS}/make_qa_table.log",
    benchmark:
        f"{BENCHMARKS}/make_qa_table.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=1024,
        runtime=10,
    shell:
        "ecglm qa-table {params.results} --out {output.markdown:q} --config-json {params.config_json:q} > {log:q} 2>&1"
