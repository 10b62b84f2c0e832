# The jobs after a checkpoint are unknown until it runs: `part` is not in the DAG before.
import os
def agg_input(wildcards):
    out = checkpoints.split.get().output[0]
    return expand("parts/{i}.txt", i=glob_wildcards(os.path.join(out, "{i}.txt")).i)

rule all:
    input: "agg.txt"

checkpoint split:
    output: directory("split")
    shell: "mkdir -p split; touch split/1.txt split/2.txt"

rule part:
    input: "split/{i}.txt"
    output: "parts/{i}.txt"
    shell: "cp {input} {output}"

rule agg:
    input: agg_input
    output: "agg.txt"
    shell: "cat {input} > {output}"
