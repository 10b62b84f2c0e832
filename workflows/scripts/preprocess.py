"""Split into train/test and standardize with statistics of the train part."""

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

snakemake = globals()["snakemake"]
data = np.loadtxt(snakemake.input[0], delimiter=",", skiprows=1)
X, y = data[:, :-1], data[:, -1].astype(int)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=float(snakemake.params.test_size), random_state=0, stratify=y
)
scaler = StandardScaler().fit(X_train)
np.savez(
    snakemake.output[0],
    X_train=scaler.transform(X_train),
    X_test=scaler.transform(X_test),
    y_train=y_train,
    y_test=y_test,
)
with open(snakemake.log[0], "w") as log:
    print(f"train={len(y_train)} test={len(y_test)}", file=log)
