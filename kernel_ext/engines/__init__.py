"""Engines: where a recorded session goes to run in production, one subpackage each (dbos/).

An engine is a target a session graduates to, not an SDK whose calls we journal (those are in
integrations/). It runs the session's steps under its own durable store and scheduler, with the same
runtime inside every step: each call still goes through `ActiveStep.claim`, the one replay rule, and
the notebook's recording travels with the exported program, so nothing it paid for is paid again.
An engine brings what that takes: the export that writes the program, the program's command line,
the writer that checkpoints a live call in the engine's store, and the commands that read sessions
back from it. Engines do not know of one another, and nothing below them (runtime, journal,
integrations, the script export) imports one: only the front ends (magics, CLI) do, when a command
names the engine (`--engine dbos`, `--dbos URL`).
"""
