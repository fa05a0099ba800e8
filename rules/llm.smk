# The frozen base language models: the demo world's tiny LLM, built from the run's training text, and
# each pretrained Hugging Face model or GGUF file the variants use, fetched once by a local rule
# (compute nodes are often offline) whatever the number of variants that use it.

if DEMO_LLM:

    rule build_demo_llm:
        input:
            records=f"{RESULTS}/data/records.parquet",
            reports=f"{RESULTS}/text/reports_en.parquet",
            findings=f"{RESULTS}/text/findings.parquet",
        output:
            config=f"{RESULTS}/llm/config.json",
        params:
            out=lambda wildcards, output: os.path.dirname(output.config),
            sets=set_args({**config["demo_llm"], "seed": config["seed"]}),
        log:
            f"{LOGS}/build_demo_llm.log",
        benchmark:
            f"{BENCHMARKS}/build_demo_llm.tsv"
        threads: RESOURCES["threads"]
        priority: 20  # the head of the longest path (LLM, alignment, evaluation): started first, not last
        conda:
            ENV
        resources:
            mem_mb=cpu_mem_mb(),
            runtime=RESOURCES["runtime_min"],
        shell:
            "ecglm build-demo-llm --records {input.records:q} --reports {input.reports:q}"
            " --findings {input.findings:q} --out {params.out:q} {params.sets} --no-progress > {log:q} 2>&1"


if FETCHED_LLMS:

    localrules:
        fetch_llm,

    wildcard_constraints:
        llm="|".join(FETCHED_LLMS),

    rule fetch_llm:
        output:
            manifest=f"{RESULTS}/llms/{{llm}}.json",
        params:
            args=lambda wildcards: fetch_llm_args(wildcards.llm),
        log:
            f"{LOGS}/fetch_llm/{{llm}}.log",
        benchmark:
            f"{BENCHMARKS}/fetch_llm/{{llm}}.tsv"
        threads: 1
        priority: 30  # needs no input: made first, so that the real LLM's alignment never waits for it
        conda:
            ENV
        resources:
            mem_mb=4096,
            runtime=240,
        shell:
            "ecglm fetch-llm {params.args} --manifest {output.manifest:q} --no-progress > {log:q} 2>&1"
