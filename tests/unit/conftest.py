import sys
from pathlib import Path

# helper scripts that live beside the tests (ring_producer.py)
sys.path.insert(0, str(Path(__file__).parent))
