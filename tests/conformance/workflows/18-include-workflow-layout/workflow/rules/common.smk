import csv

with open(config["samples"]) as handle:
    UNITS = list(csv.DictReader(handle, delimiter="\t"))

SAMPLES = sorted({unit["sample"] for unit in UNITS})


def units_of(wildcards):
    return [unit["reads"] for unit in UNITS if unit["sample"] == wildcards.sample]
