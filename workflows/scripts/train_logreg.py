"""Fit a logistic regression on the train split."""

import pickle

import numpy as np
from sklearn.linear_model import LogisticRegression

snakemake = globals()["snakemake"]
split = np.load(snakemake.input[0])
model = LogisticRegression(C=float(snakemake.params.C), max_iter=1000)
model.fit(split["X_train"], split["y_train"])
with open(snakemake.output[0], "wb") as out:
    pickle.dump(model, out)
with open(snakemake.log[0], "w") as log:
    print(f"C={snakemake.params.C} train_accuracy={model.score(split['X_train'], split['y_train']):.4f}", file=log)
