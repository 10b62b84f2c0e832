# A checkpoint: the jobs of `part` are known only once `split` ran.
rule all:
    input: "agg.txt"

checkpoint split:
    output: directory("split")
    shell: "mkdir -p split; touch split/1.txt split/2.txt"

rule part:
    input: "split/{i}.txt"
    output: "parts/{i}.txt"
    shell: "cp {input} {output}"

def agg_input(wildcards):
    out = checkpoints.split.get().output[0]
    return expand("parts/{i}.txt", i=glob_wildcards(out + "/{i}.txt").i)

rule agg:
    input: agg_input
    output: "agg.txt"
    shell: "cat {input} > {output}"
