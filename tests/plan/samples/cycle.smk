rule all:
    input: "a.txt"

rule make_a:
    input: "b.txt"
    output: "a.txt"
    shell: "cp {input} {output}"

rule make_b:
    input: "a.txt"
    output: "b.txt"
    shell: "cp {input} {output}"
