"""The container runtime: Linux namespaces, pivot_root, mounts and the process as PID 1.

Linux-only and deliberately light: it imports nothing heavier than ``ctypes`` so that
``socker run`` starts as fast as the runtime itself.
"""
