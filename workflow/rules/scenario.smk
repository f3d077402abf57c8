rule scenario:
    input:
        code=code("scenario"),
    output:
        result("scenario"),
    log:
        log_path("scenario"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        spec=lambda w: scenario_spec(config, w.scenario),
        seed=config["seed"],
    script:
        "../scripts/scenario.py"
