# The demo world: a synthetic PTB-XL / PTB-XL+ / ECG-QA look-alike generated locally under
# resources/demo/{run}/, then verified against its own SHA256SUMS.txt by the same code as a download.


rule make_demo_data:
    output:
        ptbxl_sums=f"{PTBXL_DIR}/SHA256SUMS.txt",
        ptbxl_plus_sums=f"{PTBXL_PLUS_DIR}/SHA256SUMS.txt",
        truth=f"{DEMO_DIR}/truth.csv",
        conversations=DEMO_CONVERSATIONS,
    params:
        dest=lambda wildcards, output: os.path.dirname(output.truth),
        n_records=config["demo"]["n_records"],
        seed=config["demo"]["seed"],
        min_per_class=config["demo"]["min_per_class"],
    log:
        f"{LOGS}/make_demo_data.log",
    benchmark:
        f"{BENCHMARKS}/make_demo_data.tsv"
    threads: RESOURCES["threads"]
    conda:
        ENV
    resources:
        mem_mb=cpu_mem_mb(),
        runtime=RESOURCES["runtime_min"],
    shell:
        "ecglm demo-data --dest {params.dest:q} --n-records {params.n_records} --seed {params.seed}"
        " --min-per-class {params.min_per_class} --workers {threads} --no-progress > {log:q} 2>&1"


rule verify_demo_ptbxl:
    input:
        sums=f"{PTBXL_DIR}/SHA256SUMS.txt",
    output:
        manifest=f"{PTBXL_DIR}/{MANIFEST}",
    params:
        dest=lambda wildcards, input: os.path.dirname(input.sums),
    log:
        f"{LOGS}/verify_demo_ptbxl.log",
    benchmark:
        f"{BENCHMARKS}/verify_demo_ptbxl.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=512,
        runtime=10,
    shell:
        "ecglm verify ptbxl --dest {params.dest:q} --rates %s --manifest {output.manifest:q}"
        " --threads {threads} --no-progress > {log:q} 2>&1" % RATES


rule verify_demo_ptbxl_plus:
    input:
        sums=f"{PTBXL_PLUS_DIR}/SHA256SUMS.txt",
    output:
        manifest=f"{PTBXL_PLUS_DIR}/{MANIFEST}",
    params:
        dest=lambda wildcards, input: os.path.dirname(input.sums),
    log:
        f"{LOGS}/verify_demo_ptbxl_plus.log",
    benchmark:
        f"{BENCHMARKS}/verify_demo_ptbxl_plus.tsv"
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=512,
        runtime=10,
    shell:
        "ecglm verify ptbxl_plus --dest {params.dest:q} --include %s --manifest {output.manifest:q}"
        " --threads {threads} --no-progress > {log:q} 2>&1" % PTBXL_PLUS_INCLUDE
