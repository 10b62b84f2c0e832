# Catalog fixture: the first stage of a tiny generalized workflow (planned, never run).
from smaker_airflow import Stage

prep = Stage(config, "prep", uses=["size"])


rule prep:
    output:
        prep.out("data.txt"),
    params:
        size=prep.param("size"),
    shell:
        "echo {params.size} > {output}"
