rule all:
    input: "out/model.txt"

rule train_fast:
    output: "out/{name}.txt"
    shell: "touch {output}"

rule train_slow:
    output: "out/{name}.txt"
    shell: "touch {output}"
