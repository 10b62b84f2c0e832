"""Score the model on the held-out split: the metrics as JSON, each test example's result as CSV."""

import json
import pickle

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

snakemake = globals()["snakemake"]
split = np.load(snakemake.input.split)
with open(snakemake.input.model, "rb") as f:
    model = pickle.load(f)
X_test, y_test = split["X_test"], split["y_test"]
predicted = model.predict(X_test)
scores = model.predict_proba(X_test)[:, 1]
metrics = {
    "accuracy": round(float(accuracy_score(y_test, predicted)), 6),
    "f1": round(float(f1_score(y_test, predicted)), 6),
    "roc_auc": round(float(roc_auc_score(y_test, scores)), 6),
    "n_test": len(y_test),
}
with open(snakemake.output.metrics, "w") as out:
    json.dump(metrics, out, indent=2, sort_keys=True)
# Per example (the row of the test split is its id): what the A/B comparison's paired statistics read.
with open(snakemake.output.predictions, "w") as out:
    print("id,label,prediction,score", file=out)
    for i, (label, pred, score) in enumerate(zip(y_test, predicted, scores, strict=True)):
        print(f"{i},{int(label)},{int(pred)},{float(score)!r}", file=out)
with open(snakemake.log[0], "w") as log:
    print(json.dumps(metrics), file=log)
