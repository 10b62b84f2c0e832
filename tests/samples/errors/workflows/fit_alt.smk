# Catalog fixture: a swapped implementation of the "fit" stage (the `alt` arm).
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["alpha", "mode"], after=["prep"])


rule fit_alt:
    input:
        fit.input("prep", "data.txt"),
    output:
        fit.metrics("metrics.json"),
    shell:
        "echo '{{}}' > {output}"
