"""One error style in the three CLIs (issue 18): a wrong argument or a missing file is one `error:` line and
exit 2, never a traceback."""

from __future__ import annotations

import pytest

from reid.__main__ import main as reid_main


@pytest.mark.parametrize("args, says", [
    (["--dataset", "no-such-set", "--root", ".", "--weights", "w.safetensors"], "--dataset 'no-such-set': unknown"),
    (["--dataset", "synthcc", "--root", ".", "--weights", "/nonexistent/w.safetensors"], "--weights /nonexistent"),
])
def test_reid_eval_wrong_input_is_one_line(args, says, capsys):
    assert reid_main(["eval", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1, err


def test_reid_eval_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "w.safetensors"
    bogus.write_bytes(b"not a checkpoint at all")
    assert reid_main(["eval", "--dataset", "synthcc", "--root", str(tmp_path), "--weights", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --weights {bogus}: not a checkpoint") and err.count("\n") == 1, err
