"""DBOS as an engine: a session as one DBOS workflow, each journaled call a DBOS step.

workflow.py runs the steps (and packs the notebook's recording), app.py is the exported app's
command line (run, enqueue, wait, --workers), export.py writes that app (`durable export --engine
dbos`), and history.py reads sessions back from DBOS's tables (`durable ls/show/approve --dbos`).
The `dbos` package itself is imported only when one of them runs.
"""
