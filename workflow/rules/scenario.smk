rule scenario:
    input:
        code=code("scenario"),
    output:
        "results/scenarios/{scenario}.json",
    params:
        spec=lambda w: scenario_spec(config, w.scenario),
        seed=config["seed"],
    log:
        "logs/scenario/{scenario}.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/scenario.py"
