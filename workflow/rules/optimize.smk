rule problem:
    input:
        code=code("problem"),
        scenario="results/scenarios/{scenario}.json",
        profile=f"results/profiles/{MODEL}.json",
    output:
        "results/problems/{scenario}.json",
    log:
        "logs/problem/{scenario}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        optimizer_state_copies=config["optimize"]["optimizer_state_copies"],
    script:
        "../scripts/problem.py"


rule optimize:
    input:
        code=code("optimize"),
        problem="results/problems/{scenario}.json",
    output:
        "results/solutions/{scenario}/{method}.json",
    log:
        "logs/optimize/{scenario}/{method}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        optimize={k: config["optimize"][k] for k in ("max_iters", "exhaustive_limit")},
    script:
        "../scripts/optimize.py"


rule scenario_table:
    input:
        code=code("tables"),
        solutions=lambda w: [f for s in NAMED for f in solutions(s)],
    output:
        "results/tables/scenarios.csv",
    log:
        "logs/tables/scenarios.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        sweeps={},
        sweep=None,
    script:
        "../scripts/sweep_table.py"


rule sweep_table:
    input:
        code=code("tables"),
        solutions=lambda w: [f for s in sweep_scenarios(w.sweep) for f in solutions(s)],
    output:
        "results/tables/sweep_{sweep}.csv",
    log:
        "logs/tables/sweep_{sweep}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        sweeps=lambda w: {w.sweep: config["sweeps"][w.sweep]},
        sweep=lambda w: w.sweep,
    script:
        "../scripts/sweep_table.py"
