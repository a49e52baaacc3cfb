"""The answers of the scripted stand-in server (kernel_ext.scripted.server), one module per vendor API."""
