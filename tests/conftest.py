from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(os.environ.get("KEMM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
