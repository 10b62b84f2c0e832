rule train:
    output: "models/{model}.pkl"
    shell: "touch {output}"
