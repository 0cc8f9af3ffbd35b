"""This repository's doit tasks: the library's tasks on ./artifacts with ./config/artifacts.yaml.

doit            # scan, gc (the retention plan, a dry run) and report
doit scan       # up to date (`-- scan`) while nothing under the families changed
doit gc         # up to date while the runs the manifest describes and the config are
doit gc_apply    # apply it: move the runs it deletes to artifacts/.trash/ (no questions)
doit compact    # the compaction plan (a dry run)
doit compact_apply  # compact big JSONL (lossless) and Markdown (originals to the trash)
doit report     # artifacts/.reports/report.{md,json,html}; up to date like gc
doit pin --id ID --on
"""

from artifacts_tasks.tasks import *  # noqa: F403  (scan, gc, gc_apply, compact, ..., report)

# A json dep file: portable across machines and CI caches (dbm is not).
DOIT_CONFIG = {
    "dep_file": ".doit.json",
    "backend": "json",
    "default_tasks": ["scan", "gc", "report"],
    "verbosity": 2,
}
