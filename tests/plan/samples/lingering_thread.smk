# Snakefile code that leaves a non-daemon thread running must not hold up planning.
import threading
import time

threading.Thread(target=time.sleep, args=(120,)).start()


rule all:
    input:
        "a.txt",


rule make_a:
    output:
        "a.txt",
    shell:
        "touch {output}"
