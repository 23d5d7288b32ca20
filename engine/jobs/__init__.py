"""Long jobs outside the app: the job queue and its worker loop (``queue``) and the workers' heartbeat files
(``workers``). Torch-free.
"""
