"""Run specs: the frozen dataclasses and their validation (``run_spec``), reading a spec from YAML or a dict
(``load``), the presets and the demo specs (``presets``). Torch-free.
"""
