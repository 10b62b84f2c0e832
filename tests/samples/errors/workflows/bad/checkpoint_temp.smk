# A checkpoint and a temp() output read after it: its readers are known only once it ran.
rule all:
    input: "agg.txt"

rule seed:
    output: temp("seed.txt")
    shell: "echo 1 2 > {output}"

checkpoint split:
    input: "seed.txt"
    output: directory("split")
    shell: "mkdir -p split; for i in $(cat {input}); do touch split/$i.txt; done"

def agg_input(wildcards):
    out = checkpoints.split.get().output[0]
    return expand("split/{i}.txt", i=glob_wildcards(out + "/{i}.txt").i)

rule agg:
    input: agg_input
    output: "agg.txt"
    shell: "cat {input} > {output}"
