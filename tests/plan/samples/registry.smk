# Stands in for a Snakefile that imports smaker_airflow.workflow.stage (the real helper).
import sys
import types

fake = types.ModuleType("smaker_airflow.workflow.stage")
fake.registry_snapshot = lambda: {"modules": {"train": "train.smk"}, "metrics": ["metrics.json"]}
sys.modules["smaker_airflow.workflow.stage"] = fake


rule all:
    input:
        "a.txt",


rule make_a:
    output:
        "a.txt",
    shell:
        "touch {output}"
