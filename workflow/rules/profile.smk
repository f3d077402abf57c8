rule profile:
    input:
        code=code("profile"),
    output:
        json="results/profiles/{model}.json",
        csv="results/profiles/{model}.csv",
    log:
        "logs/profile/{model}.log",
    conda:
        ENV
    threads: config["profile"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        model=lambda w: w.model,
        dataset=config["dataset"],
        profile=config["profile"],
        bits={
            "bits_per_activation": config["physical"]["bits_per_activation"],
            "bits_per_param": config["physical"]["bits_per_param"],
        },
        seed=config["seed"],
    script:
        "../scripts/profile.py"
