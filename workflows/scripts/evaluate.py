"""Score the model on the held-out split and write the metrics as JSON."""

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
metrics = {
    "accuracy": round(float(accuracy_score(y_test, predicted)), 6),
    "f1": round(float(f1_score(y_test, predicted)), 6),
    "roc_auc": round(float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])), 6),
    "n_test": len(y_test),
}
with open(snakemake.output[0], "w") as out:
    json.dump(metrics, out, indent=2, sort_keys=True)
with open(snakemake.log[0], "w") as log:
    print(json.dumps(metrics), file=log)
