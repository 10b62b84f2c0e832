rule all:
    input: expand("out/{x}.txt", x=config["grid"])

rule make:
    output: "out/{x}.txt"
    shell: "touch {output}"
