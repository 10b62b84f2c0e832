# Evaluate: score the model on the held-out split; metrics.json is what gates and A/B compare,
# predictions.csv (one row per test example) gives the A/B differences their confidence intervals.
from smaker_airflow import Stage

evaluate = Stage(config, "evaluate", after=["train"])


rule evaluate:
    input:
        model=evaluate.input("train", "model.pkl"),
        split=evaluate.input("preprocess", "split.npz"),
    output:
        metrics=evaluate.metrics("metrics.json"),
        predictions=evaluate.predictions("predictions.csv"),
    log:
        evaluate.log("evaluate.log"),
    resources:
        mem_mb=200,
        runtime=5,
    script:
        "scripts/evaluate.py"
