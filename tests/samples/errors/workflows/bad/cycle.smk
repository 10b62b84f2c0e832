rule all:
    input:
        "out/a.txt",


rule make_a:
    input:
        "out/b.txt",
    output:
        "out/a.txt",
    shell:
        "cp {input} {output}"


rule make_b:
    input:
        "out/a.txt",
    output:
        "out/b.txt",
    shell:
        "cp {input} {output}"
