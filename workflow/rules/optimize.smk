rule problem:
    input:
        code=code("problem"),
        scenario="results/scenarios/{scenario}.json",
        profile=f"results/profiles/{MODEL}.json",
    output:
        "results/problems/{scenario}.json",
    params:
        optimizer_state_copies=config["optimize"]["optimizer_state_copies"],
    log:
        "logs/problem/{scenario}.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/problem.py"


rule optimize:
    input:
        code=code("optimize"),
        problem="results/problems/{scenario}.json",
    output:
        "results/solutions/{scenario}/{method}.json",
    params:
        optimize={
            k: config["optimize"][k] for k in ("max_iters", "exhaustive_limit")
        },
    log:
        "logs/optimize/{scenario}/{method}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/optimize.py"


rule scenario_table:
    input:
        lambda w: [f for s in NAMED for f in solutions(s)],
    output:
        "results/tables/scenarios.csv",
    params:
        sweeps=config["sweeps"],
        sweep=None,
    log:
        "logs/tables/scenarios.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/sweep_table.py"


rule sweep_table:
    input:
        lambda w: [f for s in sweep_scenarios(w.sweep) for f in solutions(s)],
    output:
        "results/tables/sweep_{sweep}.csv",
    params:
        sweeps=config["sweeps"],
        sweep=lambda w: w.sweep,
    log:
        "logs/tables/sweep_{sweep}.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/sweep_table.py"
