rule train:
    input:
        code=code("train"),
        problem=f"results/problems/{TRAIN_SCENARIO}.json",
        solution=lambda w: (
            f"results/solutions/{TRAIN_SCENARIO}/{TRAIN_METHODS[w.method][0]}.json"
        ),
    output:
        metrics="results/train/{method}/seed{seed}/metrics.csv",
        timing="results/train/{method}/seed{seed}/timing.csv",
        bits="results/train/{method}/seed{seed}/bits.csv",
        summary="results/train/{method}/seed{seed}/summary.json",
        provenance="results/train/{method}/seed{seed}/provenance.json",
    log:
        "logs/train/{method}/seed{seed}.log",
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        model=MODEL,
        dataset=config["dataset"],
        train=config["train"],
    script:
        "../scripts/train.py"
