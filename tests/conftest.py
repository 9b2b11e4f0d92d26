"""Shared test set-up: the repo root on sys.path, deterministic torch, few threads."""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repo root
sys.path.insert(0, HERE)  # tests/helpers.py
torch.set_num_threads(2)
