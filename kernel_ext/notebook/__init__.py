"""The notebook front end: magics, what a cell shows, its progress line, restoring variables."""
