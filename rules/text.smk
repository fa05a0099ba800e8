# The text of every ECG: its report in English, and guideline findings per lead from its 12SL features.

# The openai backend needs the network (cluster compute nodes are often offline); its paid cache
# lives in resources/cache/, outside the declared outputs, so a failed job loses nothing.
if config["text"]["backend"] == "openai":

    localrules:
        translate_reports,



rule translate_reports:
    input:
        records=f"{RESULTS}/data/records.parquet",
        glossary=sorted(glob.glob(os.path.join(DEFAULT_GLOSSARY_DIR, "*"))),
    output:
        reports=f"{RESULTS}/text/reports_en.parquet",
        untranslated=f"{RESULTS}/text/reports_en.untranslated.csv",
    params:
        backend=config["text"]["backend"],
        options=translate_args(),
    log:
        f"{LOGS}/translate_reports.log",
    benchmark:
        f"{BENCHMARKS}/translate_reports.tsv"
    threads: RESOURCES["threads"]
    priority: 20  # the head of the longest path (the demo LLM and the alignments read their outputs)
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm translate --records {input.records:q} --out {output.reports:q} --backend {params.backend}"
        " {params.options} --workers {threads} > {log:q} 2>&1"


rule describe_findings:
    input:
        ptbxl_plus=ptbxl_plus_manifest(),
        measured=f"{RESULTS}/data/features_measured.parquet",
        records=f"{RESULTS}/data/records.parquet",
        guidelines=GUIDELINES,
    output:
        findings=f"{RESULTS}/text/findings.parquet",
        missing=f"{RESULTS}/text/findings.missing_features.csv",
    params:
        features=features_args,
    log:
        f"{LOGS}/describe_findings.log",
    benchmark:
        f"{BENCHMARKS}/describe_findings.tsv"
    threads: 1
    priority: 20  # the head of the longest path (the demo LLM and the alignments read their outputs)
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm describe {params.features} --records {input.records:q} --guidelines {input.guidelines:q}"
        " --out {output.findings:q} > {log:q} 2>&1"
