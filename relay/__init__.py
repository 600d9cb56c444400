"""The real relay core: sans-IO logic shared by the simulator and the servers."""
