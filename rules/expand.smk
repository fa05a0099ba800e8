# The training samples: the paper's template per ECG, expanded by dropping 4-6 leads (text and
# signal, through a lead mask), in Parquet shards per split.


rule expand_pairs:
    input:
        records=f"{RESULTS}/data/records.parquet",
        reports=f"{RESULTS}/text/reports_en.parquet",
        findings=f"{RESULTS}/text/findings.parquet",
    output:
        pairs=directory(f"{RESULTS}/pairs"),
    params:
        copies=config["expand"]["copies"],
        drop_k=" ".join(str(k) for k in config["expand"]["drop_k"]),
        shard_rows=config["expand"]["shard_rows"],
        seed=config["seed"],
        flags=" ".join(
            flag
            for flag, on in (
                ("--skip-missing", config["expand"]["skip_missing"]),
                ("--with-edit-notes", config["expand"]["with_edit_notes"]),
            )
            if on
        ),
    log:
        f"{LOGS}/expand_pairs.log",
    benchmark:
        f"{BENCHMARKS}/expand_pairs.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm expand --records {input.records:q} --reports {input.reports:q} --findings {input.findings:q}"
        " --out {output.pairs:q} --copies {params.copies} --drop-k {params.drop_k}"
        " --shard-rows {params.shard_rows} --seed {params.seed} {params.flags} --no-progress > {log:q} 2>&1"
