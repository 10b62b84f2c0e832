"""Fit a random forest on the train split."""

import pickle

import numpy as np
from sklearn.ensemble import RandomForestClassifier

snakemake = globals()["snakemake"]
split = np.load(snakemake.input[0])
model = RandomForestClassifier(
    n_estimators=int(snakemake.params.n_estimators), n_jobs=snakemake.threads, random_state=0
)
model.fit(split["X_train"], split["y_train"])
with open(snakemake.output[0], "wb") as out:
    pickle.dump(model, out)
with open(snakemake.log[0], "w") as log:
    print(f"n_estimators={snakemake.params.n_estimators} threads={snakemake.threads}", file=log)
