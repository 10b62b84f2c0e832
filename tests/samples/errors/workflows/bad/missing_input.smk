rule all:
    input:
        "out/summary.txt",


rule summarize:
    input:
        "data/raw.csv",
    output:
        "out/summary.txt",
    shell:
        "cp {input} {output}"
