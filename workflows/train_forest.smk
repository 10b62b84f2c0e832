# Train (candidate): a random forest, swapped in for the logistic regression by an A/B arm.
from smaker_airflow import Stage

train = Stage(config, "train", uses=["n_estimators"], after=["preprocess"])


rule train_forest:
    input:
        train.input("preprocess", "split.npz"),
    output:
        train.out("model.pkl"),
    params:
        n_estimators=train.param("n_estimators"),
    log:
        train.log("train.log"),
    threads: 2
    retries: 1
    resources:
        mem_mb=800,
        runtime=10,
    script:
        "scripts/train_forest.py"
