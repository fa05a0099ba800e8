# The real world: fetch the PhysioNet projects into resources/physionet/<slug>/<version>/,
# verified by SHA-256. Local rules: cluster compute nodes are often offline.


localrules:
    download_ptbxl,
    download_ptbxl_plus,


rule download_ptbxl:
    output:
        manifest=f"{PTBXL_DIR}/{MANIFEST}",
    params:
        dest=lambda wildcards, output: os.path.dirname(output.manifest),
        options=download_args("ptbxl"),
    log:
        f"{LOGS}/download_ptbxl.log",
    benchmark:
        f"{BENCHMARKS}/download_ptbxl.tsv"
    threads: RESOURCES["download_threads"]
    conda:
        ENV
    resources:
        mem_mb=1024,
        runtime=600,
    shell:
        "ecglm download ptbxl {params.options} --rates %s --dest {params.dest:q}"
        " --manifest {output.manifest:q} --no-progress > {log:q} 2>&1" % RATES


rule download_ptbxl_plus:
    output:
        manifest=f"{PTBXL_PLUS_DIR}/{MANIFEST}",
    params:
        dest=lambda wildcards, output: os.path.dirname(output.manifest),
        options=download_args("ptbxl_plus"),
    log:
        f"{LOGS}/download_ptbxl_plus.log",
    benchmark:
        f"{BENCHMARKS}/download_ptbxl_plus.tsv"
    threads: RESOURCES["download_threads"]
    conda:
        ENV
    resources:
        mem_mb=1024,
        runtime=600,
    shell:
        "ecglm download ptbxl_plus {params.options} --include %s --dest {params.dest:q}"
        " --manifest {output.manifest:q} --no-progress > {log:q} 2>&1" % PTBXL_PLUS_INCLUDE
