# The frozen base language model: the demo world's tiny LLM, built from the run's training text, or a
# pretrained Hugging Face model fetched once by a local rule (compute nodes are often offline).

if LLM["source"] == "demo":

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
        conda:
            ENV
        resources:
            mem_mb=cpu_mem_mb(),
            runtime=RESOURCES["runtime_min"],
        shell:
            "ecglm build-demo-llm --records {input.records:q} --reports {input.reports:q}"
            " --findings {input.findings:q} --out {params.out:q} {params.sets} --no-progress > {log:q} 2>&1"

else:

    localrules:
        fetch_llm,

    rule fetch_llm:
        output:
            manifest=LLM_INPUT,
        params:
            name=shlex.quote(LLM["name"]),
            out=shlex.quote(LLM_DIR),
            revision=f"--revision {shlex.quote(LLM['revision'])}" if LLM["revision"] else "",
            remote="--trust-remote-code" if LLM["trust_remote_code"] else "",
        log:
            f"{LOGS}/fetch_llm.log",
        benchmark:
            f"{BENCHMARKS}/fetch_llm.tsv"
        threads: 1
        conda:
            ENV
        resources:
            mem_mb=1024,
            runtime=240,
        shell:
            "ecglm fetch-llm {params.name} --out {params.out} {params.revision} {params.remote}"
            " --manifest {output.manifest:q} > {log:q} 2>&1"
