"""ipywidgets views of durable sessions (approvals, history).

Depends on kernel_ext and journal, never the reverse.
"""
