# The snakemake-workflows layout reads config/config.yaml; this project has none.
configfile: "config/config.yaml"


rule all:
    input:
        expand("out/{sample}.txt", sample=config["samples"]),


rule make:
    output:
        "out/{sample}.txt",
    shell:
        "echo {wildcards.sample} > {output}"
