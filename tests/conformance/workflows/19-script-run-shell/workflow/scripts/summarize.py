"""Sum each input file's numbers into one JSON document (sorted keys: stable bytes)."""

import json


def total(path):
    return sum(int(line) for line in open(path) if line.strip().isdigit())


result = {name: total(path) for name, path in snakemake.input.items()}  # noqa: F821
result["name"] = snakemake.params.name  # noqa: F821
with open(snakemake.output[0], "w") as handle:  # noqa: F821
    json.dump(result, handle, sort_keys=True)
    handle.write("\n")
