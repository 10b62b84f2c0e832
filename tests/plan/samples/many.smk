# A wide workflow: one wildcard job per item, all sharing one upstream job.
rule all:
    input:
        expand("out/{i}.txt", i=range(int(config["n"]))),


rule work:
    input:
        "shared.txt",
    output:
        "out/{i}.txt",
    resources:
        mem_mb=lambda wildcards, attempt: 100 * attempt,
    shell:
        "touch {output}"


rule shared:
    output:
        "shared.txt",
    shell:
        "touch {output}"
