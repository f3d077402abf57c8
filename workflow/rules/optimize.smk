rule problem:
    input:
        code=code("problem"),
        scenario=result("scenario"),
        profile=result("profile_json", model=MODEL),
    output:
        result("problem"),
    log:
        log_path("problem"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        **settings.problem_settings(config),
    script:
        "../scripts/problem.py"


rule optimize:
    input:
        code=code("optimize"),
        problem=result("problem"),
    output:
        result("solution"),
    log:
        log_path("optimize"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=lambda w: settings.optimize_settings(config, w.method),
    script:
        "../scripts/optimize.py"


rule scenario_table:
    input:
        code=code("tables"),
        solutions=lambda w: [f for s in NAMED for f in solutions(s)],
    output:
        result("scenario_table"),
    log:
        log_path("scenario_table"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        sweep=None,
        key=None,
        values=None,
    script:
        "../scripts/sweep_table.py"


rule sweep_table:
    input:
        code=code("tables"),
        solutions=lambda w: [f for s in sweep_scenarios(w.sweep) for f in solutions(s)],
    output:
        result("sweep_table"),
    log:
        log_path("sweep_table"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        sweep=lambda w: w.sweep,
        key=lambda w: settings.sweep_settings(config, w.sweep)["key"],
        values=lambda w: settings.sweep_settings(config, w.sweep)["values"],
    script:
        "../scripts/sweep_table.py"


rule rounds_table:
    input:
        code=code("rounds"),
        problem=result("problem"),
    output:
        result("rounds_table"),
    log:
        log_path("rounds_table"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        **settings.rounds_settings(config),
    script:
        "../scripts/rounds_table.py"
