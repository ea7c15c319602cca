"""%memcheckpoint and %memrestore in a real IPython shell (real deaths are in tests/oom)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from tests.magics.helpers import shown


@pytest.fixture
def checkpointed(shell: Any, tmp_path: Path) -> Any:
    with capture_output():
        shell.run_line_magic("memcheckpoint", f"on --dir {tmp_path / 'cp'} --max-size 1G")
    yield shell
    shell.run_line_magic("memcheckpoint", "off")


def run(shell: Any, code: str) -> str:
    with capture_output() as captured:
        result = shell.run_cell(code, store_history=True)
    assert result.success, result.error_in_exec or result.error_before_exec
    return shown(captured)


def test_variables_come_back_in_a_fresh_namespace(checkpointed: Any, tmp_path: Path) -> None:
    shell = checkpointed
    run(shell, "import numpy as np, pandas as pd\n"
               "df = pd.DataFrame({'a': np.arange(5), 's': list('abcde')})\n"
               "def double(x):\n    return 2 * x + offset\n"
               "offset = 1\ngen = (i for i in range(3))\n_hidden = 5")
    status = run(shell, "%memcheckpoint status --wait")
    assert "last checkpoint after cell [" in status and "5 variables" in status
    assert "a generator: where it stopped cannot be saved" in status
    assert "_hidden" not in status
    assert "checkpoint" in run(shell, "%memstatus --top 0")
    shell.run_line_magic("reset", "-f")
    text = run(shell, f"%memrestore {tmp_path / 'cp'}")
    assert "restored 5 variables" in text and "not restored: a generator" in text
    ns = shell.user_ns
    assert list(ns["df"]["s"]) == list("abcde") and ns["double"](3) == 7
    assert "gen" not in ns and "_hidden" not in ns
    listed = run(shell, f"%memrestore {tmp_path / 'cp'} --list")
    assert "nothing restored: --list" in listed


def test_only_some_variables(checkpointed: Any, tmp_path: Path) -> None:
    run(checkpointed, "a = [1, 2]\nb = {'x': 3}")
    run(checkpointed, "%memcheckpoint status --wait")
    checkpointed.run_line_magic("reset", "-f")
    run(checkpointed, f"%memrestore {tmp_path / 'cp'} --only b")
    assert checkpointed.user_ns["b"] == {"x": 3} and "a" not in checkpointed.user_ns


def test_restoring_does_not_write_the_variables_again(checkpointed: Any) -> None:
    run(checkpointed, "import numpy as np\nbig = np.ones(1_000_000)")
    run(checkpointed, "%memcheckpoint status --wait")
    checkpointed.run_line_magic("reset", "-f")
    assert "restored 2 variables" in run(checkpointed, "%memrestore")  # from --dir
    magics = checkpointed.magics_manager.registry["MemCheckpoint"]
    run(checkpointed, "big.sum()")
    run(checkpointed, "%memcheckpoint status --wait")
    assert magics.checkpointer.last.written_bytes == 0


@pytest.mark.parametrize(("line", "message"), [
    ("on --max-size lots", "--max-size: "),
    ("on --max-size 0", "must be positive"),
    ("status --dir /tmp", "--dir and --max-size go with on"),
    ("sometimes", "invalid choice"),
    ("on --maxsize 1G", "did you mean --max-size"),
])
def test_bad_arguments(shell: Any, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("memcheckpoint", line)


def test_restore_without_a_checkpoint_says_so(shell: Any, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no checkpoint in"):
        shell.run_line_magic("memrestore", str(tmp_path / "none"))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UsageError, match=r"cannot keep checkpoints there: .*other users"):
        shell.run_line_magic("memcheckpoint", f"on --dir {shared}")


def test_help_has_usage_and_examples(shell: Any) -> None:
    for name in ("memcheckpoint", "memrestore"):
        doc = shell.find_line_magic(name).__doc__
        assert "Examples:" in doc and "usage:" in doc.lower() and "``" not in doc


def test_off_by_default_and_off_again(shell: Any, tmp_path: Path) -> None:
    with capture_output() as captured:
        shell.run_line_magic("memcheckpoint", "")
        shell.run_line_magic("memcheckpoint", f"on --dir {tmp_path}")
        shell.run_line_magic("memcheckpoint", "off")
    lines = captured.stdout.splitlines()
    assert lines[0].startswith("checkpoints off")
    assert lines[1].startswith("checkpoints on: after each cell that changes variables")
    assert lines[2].startswith("checkpoints off (the last complete one stays")
    callbacks = shell.events.callbacks
    assert not [c for c in callbacks["post_run_cell"] if "MemCheckpoint" in repr(c)]


def test_a_directory_with_a_space_in_quotes(shell: Any, tmp_path: Path) -> None:
    where = tmp_path / "my checkpoints"
    run(shell, f'%memcheckpoint on --dir "{where}"\nkept = [1, 2, 3]')
    run(shell, "%memcheckpoint status --wait")
    shell.run_line_magic("memcheckpoint", "off")
    assert len(list(where.glob("checkpoint-*.meno"))) == 1
    assert "kept" in run(shell, f'%memrestore "{where}" --list')
