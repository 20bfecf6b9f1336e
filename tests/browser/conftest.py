import sys
from pathlib import Path

# The helpers that run the service in-process live beside the service tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
