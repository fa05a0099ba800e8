# ECG-QA: the single questions joined to the prepared signals (ecglm qa-data).


rule prepare_qa:
    input:
        records=f"{RESULTS}/data/records.parquet",
        world=f"{DEMO_DIR}/truth.csv" if QA["source"] == "demo" else [],
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
