# Catalog fixture: the second stage; its metrics are the workflow's final output.
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["alpha", "mode"], after=["prep"])


rule fit:
    input:
        fit.input("prep", "data.txt"),
    output:
        fit.metrics("metrics.json"),
    params:
        alpha=fit.param("alpha"),
    shell:
        "echo '{{\"alpha\": {params.alpha}}}' > {output}"
