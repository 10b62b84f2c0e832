# mem_mb needs data that only exists at run time; the other resources are plannable.
def from_data(wildcards, input):
    raise RuntimeError("needs the data")


rule all:
    input:
        "out/a.txt",


rule make:
    output:
        "out/{x}.txt",
    threads: 3
    resources:
        mem_mb=from_data,
        runtime=5,
        disk_mb=lambda wildcards, input: max(2 * input.size_mb, 100),
    shell:
        "touch {output}"
