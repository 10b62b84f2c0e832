# Catalog fixture: a plain Snakefile (no Stage), reading its parameter from `config`.
rule all:
    input:
        "out/result.txt",


rule make:
    output:
        "out/{name}.txt",
    params:
        size=config["size"],
    shell:
        "echo {params.size} > {output}"
