# Stage emulate (issue 11): the train scenario's solutions in the distributed runtime, each device in its
# own network namespace with tc-shaped links and paced compute; one job (the methods share the host).


rule emulate:
    input:
        code=code("emulate"),
        problem=result("problem", scenario=TRAIN_SCENARIO),
        solutions=lambda w: [
            result("solution", scenario=TRAIN_SCENARIO, method=m)
            for m in config["emulate"]["methods"]
        ],
    output:
        table=result("emulation_table"),
        meta=result("emulation_meta"),
        devices=[
            result("emulation", method=m, file="measured_devices.csv")
            for m in (config.get("emulate") or {}).get("methods", [])
        ],
    log:
        log_path("emulate"),
    conda:
        ENV
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        **settings.emulate_settings(config),
        out_dir=lambda w, output: os.path.dirname(output.meta),
    script:
        "../scripts/emulate.py"
