rule all:
    input:
        "stream.fq",


# Only `rule all` reads the pipe: no job runs a command that reads it.
rule stream:
    output:
        pipe("stream.fq"),
    shell:
        "echo ACGT > {output}"
