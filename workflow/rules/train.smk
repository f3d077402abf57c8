rule train:
    input:
        code=code("train"),
        problem=result("problem", scenario=TRAIN_SCENARIO),
        solution=lambda w: result(
            "solution",
            scenario=TRAIN_SCENARIO,
            method=TRAIN_METHODS[w.method].solution_method,
        ),
    output:
        metrics=result("train", file="metrics.csv"),
        timing=result("train", file="timing.csv"),
        bits=result("train", file="bits.csv"),
        summary=result("train", file="summary.json"),
        provenance=result("train", file="provenance.json"),
    log:
        log_path("train"),
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        **settings.train_settings(config),
        out_dir=lambda w, output: os.path.dirname(output.metrics),
    script:
        "../scripts/train.py"
