"""Generate the day's labelled data: a synthetic binary classification slice."""

import zlib

import numpy as np
from sklearn.datasets import make_classification

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
n_samples = int(snakemake.params.n_samples)
run_date = str(snakemake.params.run_date)
seed = zlib.crc32(run_date.encode()) % (2**31)

X, y = make_classification(n_samples=n_samples, n_features=20, n_informative=8, flip_y=0.05, random_state=seed)
data = np.column_stack([X, y])
header = ",".join([f"f{i}" for i in range(X.shape[1])] + ["label"])
np.savetxt(snakemake.output[0], data, delimiter=",", header=header, comments="")
with open(snakemake.log[0], "w") as log:
    print(f"run_date={run_date} seed={seed} rows={n_samples}", file=log)
