# The prepared ECG store: records.parquet (one row per ECG, labels per task) and one
# memory-mappable int16 signals array [N, 12, T] in microvolts, row-aligned with it; and the
# 12SL-named features measured from those signals (for ECGs without a PTB-XL+ row).


rule prepare_records:
    input:
        manifest=f"{PTBXL_DIR}/{MANIFEST}",
    output:
        records=f"{RESULTS}/data/records.parquet",
        signals=f"{RESULTS}/data/signals_{FS}.npy",
        bad_records=f"{RESULTS}/data/bad_records.csv",
        absent_records=f"{RESULTS}/data/absent_records.csv",
    params:
        source=lambda wildcards, input: os.path.dirname(input.manifest),
        out=lambda wildcards, output: os.path.dirname(output.records),
        skip="--skip-bad-records" if config["data"]["skip_bad_records"] else "",
    log:
        f"{LOGS}/prepare_records.log",
    benchmark:
        f"{BENCHMARKS}/prepare_records.tsv"
    threads: RESOURCES["threads"]
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm prepare --source {params.source:q} --out {params.out:q} --fs %d --workers {threads}"
        " {params.skip} --no-progress > {log:q} 2>&1" % FS


rule measure_features:
    input:
        records=f"{RESULTS}/data/records.parquet",
        signals=f"{RESULTS}/data/signals_{FS}.npy",
    output:
        features=f"{RESULTS}/data/features_measured.parquet",
    log:
        f"{LOGS}/measure_features.log",
    benchmark:
        f"{BENCHMARKS}/measure_features.tsv"
    threads: RESOURCES["threads"]
    priority: 20  # the head of the longest path (the demo LLM and the alignments read their outputs)
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm measure --signals {input.signals:q} --records {input.records:q} --out {output.features:q}"
        " --fs %d --workers {threads} > {log:q} 2>&1" % FS
