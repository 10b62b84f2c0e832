import os

THRESHOLD = float(os.environ.get("SMAKER_TEST_UNSET_VARIABLE", "not a number"))

rule all:
    output:
        "x",
