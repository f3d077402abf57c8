rule profile:
    input:
        code=code("profile"),
    output:
        json=result("profile_json"),
        csv=result("profile_csv"),
    log:
        log_path("profile"),
    conda:
        ENV
    threads: config["profile"]["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        **settings.profile_settings(config),
    script:
        "../scripts/profile.py"
