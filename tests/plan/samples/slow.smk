import subprocess
import time

# A process the Snakefile starts while it is read: a timeout must stop it with the worker.
child = subprocess.Popen(["sleep", "300"])
with open(config["pidfile"], "w") as handle:
    handle.write(str(child.pid))

time.sleep(60)

rule all:
    output: "x"
