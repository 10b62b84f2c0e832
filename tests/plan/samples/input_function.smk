def inputs(wildcards):
    return config["inputs"][wildcards.x]


rule all:
    input:
        "out/a.txt",


rule make:
    input:
        inputs,
    output:
        "out/{x}.txt",
    shell:
        "touch {output}"
