"""%memspill in a real IPython shell (the real cgroup is in tests/oom)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from tests.magics.helpers import shown


def run(shell: Any, code: str) -> str:
    with capture_output() as captured:
        result = shell.run_cell(code, store_history=True)
    assert result.success, result.error_in_exec or result.error_before_exec
    return shown(captured)


@pytest.fixture
def spill_dir(shell: Any, tmp_path: Path) -> Path:
    yield tmp_path / "spill"
    store = shell.magics_manager.registry["SpillMagics"].store
    if store is not None:
        store.close()


def test_move_list_use_and_bring_back(shell: Any, spill_dir: Path) -> None:
    run(shell, "import numpy as np, pandas as pd\n"
               "arr = np.arange(200_000, dtype=np.float64)\n"
               "df = pd.DataFrame({'a': np.arange(100_000),\n"
               "                   'c': pd.Categorical(['x', 'y'] * 50_000)})")
    text = run(shell, f"%memspill arr df --dir {spill_dir}")
    assert "moved 2 variable(s) to disk in" in text and str(spill_dir) in text
    listing = run(shell, "%memspill --list")
    assert "arr" in listing and "df" in listing and "in RAM now" in listing
    assert "on disk in" in run(shell, "%memstatus --top 0")
    assert run(shell, "print(arr.sum(), df.groupby('c', observed=True)['a'].sum().tolist())"
               ).strip() == "19999900000.0 [2499950000, 2500000000]"
    assert "brought `arr` back" in run(shell, "%memspill --back arr")
    assert shell.user_ns["arr"].base is None
    run(shell, "df = None")  # rebound: its files go at the end of the cell
    assert list(spill_dir.iterdir()) == []
    assert "no variable is on disk" in run(shell, "%memspill --list")


def test_a_variable_in_the_output_cache_is_refused(shell: Any, spill_dir: Path) -> None:
    run(shell, "import numpy as np\nshown = np.ones(100_000)")
    run(shell, "shown")  # now Out[N] and _ hold it too
    with pytest.raises(UsageError, match=r"also held by `_`, .*Out\[\d+\].*%memclean"):
        shell.run_line_magic("memspill", f"shown --dir {spill_dir}")
    assert isinstance(shell.user_ns["shown"], np.ndarray) and shell.user_ns["shown"].base is None


@pytest.mark.parametrize(("line", "message"), [
    ("", "name the variables to move"),
    ("a --list", "name the variables to move, or give --list"),
    ("nope", "no variable named nope"),
    ("1bad", "needs a valid Python variable name"),
    ("--back ghost", "not on disk: ghost"),
])
def test_bad_arguments(shell: Any, spill_dir: Path, line: str, message: str) -> None:
    shell.user_ns["a"] = np.ones(3)
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("memspill", line + (f" --dir {spill_dir}" if line else ""))


def test_help(shell: Any) -> None:
    doc = shell.find_line_magic("memspill").__doc__
    assert "Examples:" in doc and "usage:" in doc.lower() and "%memguard on --spill" in doc
    guard_doc = shell.find_line_magic("memguard").__doc__
    assert "--spill" in guard_doc
    with pytest.raises(UsageError, match="--spill goes with on"):
        shell.run_line_magic("memguard", "status --spill")
