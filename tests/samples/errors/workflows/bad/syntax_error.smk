rule all:
    input:
        "out/result.txt",


rule make:
    output:
        "out/result.txt"
    shell
        "touch {output}"
