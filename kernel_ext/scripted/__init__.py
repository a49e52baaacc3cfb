"""The answers of the scripted stand-in server (kernel_ext.scripted_model), one module per vendor API."""
