rule all:
    input: "out/a.txt"

rule make:
    input: "in/{sample}.csv"
    output: "out/{name}.txt"
    shell: "touch {output}"
