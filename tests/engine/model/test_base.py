import os

import torch

from engine.model.base import detect_device


def test_detect_device_names_cpu_or_cuda():
    device = detect_device()
    assert device.startswith("cuda (") if torch.cuda.is_available() else device == f"cpu ({os.cpu_count()} cores)"
