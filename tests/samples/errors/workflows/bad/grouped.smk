# Catalog fixture: two rules in one Snakemake group job, which the mapped layout cannot run.
rule all:
    input:
        "out/b.txt",


rule a:
    output:
        "out/a.txt",
    group:
        "together"
    shell:
        "echo a > {output}"


rule b:
    input:
        "out/a.txt",
    output:
        "out/b.txt",
    group:
        "together"
    shell:
        "cat {input} > {output}"
