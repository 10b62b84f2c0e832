rule all:
    input: "a.txt"

rule make_a:
    output: "a.txt"
    shell "touch {output}"
