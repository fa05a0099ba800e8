# ECG-LM: from raw public data to the paper's result tables.
#
#   snakemake --cores 2                                   # the default config (config/config.yaml)
#   snakemake --configfile config/ptbxl.yaml --cores 8    # the real run
#   snakemake --configfile config/ptbxl.yaml --workflow-profile workflow/profiles/slurm
#
# Rules declare; the `ecglm` package computes (every rule runs one `ecglm <stage>` command).

import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from ecglm.core.config import validate_config
from ecglm.core.errors import StageError

min_version("9.0")


# The default config (found from the Snakefile so that `--directory` works too), unless a
# --configfile is given: that one then REPLACES it (no silent merge of the demo's keys into a real run).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")



try:
    validate_config(config, source="the Snakemake config")
except StageError as err:
    raise WorkflowError(str(err)) from None


report: "workflow/report/workflow.rst"


include: "rules/common.smk"


if DATA_SOURCE == "demo":

    include: "rules/demo.smk"

else:

    include: "rules/download.smk"


include: "rules/prepare.smk"


if config["qa"]["source"]:

    include: "rules/qa.smk"


include: "rules/text.smk"
include: "rules/expand.smk"
include: "rules/encoder.smk"
include: "rules/llm.smk"
include: "rules/align.smk"
include: "rules/evaluate.smk"


if config["chat"]["align_from"]:

    include: "rules/chat.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
