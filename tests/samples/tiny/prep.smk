# The upstream stage of the tiny two-stage workflows the tests build around it.
from smaker_airflow import Stage

prep = Stage(config, "prep", uses=["size"])


rule prep:
    output:
        prep.out("data.txt"),
    shell:
        "echo {wildcards.size} > {output}"
