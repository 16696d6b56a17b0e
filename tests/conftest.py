import sys
from pathlib import Path

# Test helpers shared by the test packages (tests/ is not a package).
sys.path.insert(0, str(Path(__file__).parent))
