# Train (control): L2-regularized logistic regression; C is the inverse regularization strength.
from smaker_airflow import Stage

train = Stage(config, "train", uses=["C"], after=["preprocess"])


rule train:
    input:
        train.input("preprocess", "split.npz"),
    output:
        train.out("model.pkl"),
    params:
        C=train.param("C"),
    log:
        train.log("train.log"),
    threads: 1
    retries: 1
    resources:
        mem_mb=500,
        runtime=10,
    script:
        "scripts/train_logreg.py"
