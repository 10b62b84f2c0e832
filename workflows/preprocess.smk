# Preprocess: hold out a test split and standardize features on the train part only.
from smaker_airflow import Stage

preprocess = Stage(config, "preprocess", uses=["test_size"], after=["ingest"])


rule preprocess:
    input:
        preprocess.input("ingest", "data.csv"),
    output:
        preprocess.out("split.npz"),
    params:
        test_size=preprocess.param("test_size"),
    log:
        preprocess.log("preprocess.log"),
    resources:
        mem_mb=200,
        runtime=5,
    script:
        "scripts/preprocess.py"
